"""security.tokens: job keys, worker and task tokens."""

import pytest

from security import tokens


def test_tokens_are_distinct_per_secret_job_worker_and_task():
    s1, s2 = tokens.new_secret(), tokens.new_secret()
    assert s1 != s2 and len(s1) == 32
    k = tokens.job_key(s1, "job-1")
    assert k == tokens.job_key(s1, "job-1")  # derived, not stored
    assert len({k, tokens.job_key(s2, "job-1"), tokens.job_key(s1, "job-2")}) == 3
    assert tokens.worker_token(k, "w1") != tokens.worker_token(k, "w2")
    assert tokens.worker_token(k, "w1") != tokens.worker_token(tokens.job_key(s1, "job-2"), "w1")
    tk = tokens.task_key(k)
    assert len(tk) == 32 and tokens.task_token(tk, "t0") != tokens.task_token(tk, "t1")
    # the task key is not the job key, nor is a task token a worker token for the same name
    assert tokens.task_token(tk, "w1") != tokens.worker_token(k, "w1")
    assert len(tokens.worker_token(k, "w1")) == 43
    assert tokens.same("abc", "abc") and not tokens.same("abc", "abd") and not tokens.same("abc", "")


def test_malformed_keys_and_token_lists():
    with pytest.raises(tokens.TokenError, match="not 32"):
        tokens.worker_token("c2hvcnQ", "w1")
    with pytest.raises(tokens.TokenError, match="not base64"):
        tokens.worker_token("&&&&", "w1")
    with pytest.raises(tokens.TokenError, match="not 32"):
        tokens.task_token(b"x", "t0")
    pairs = [("w1", "a-b_c"), ("w2", "d")]
    assert tokens.parse_worker_tokens(tokens.format_worker_tokens(pairs)) == pairs
    assert tokens.parse_worker_tokens(" w1=a ,\nw2=d,") == [("w1", "a"), ("w2", "d")]
    for bad in ("w1", "=t", "w1="):
        with pytest.raises(tokens.TokenError, match="not ID=TOKEN"):
            tokens.parse_worker_tokens(bad)
