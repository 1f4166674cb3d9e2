"""Issue 21's "no funnel" measures, as bench/data_path_bench.py takes them: the bytes the client
passes through its own reads and writes (``/proc/self/io``), on the local-workers path and on the
Lambda path (s3:// input and output on moto's S3 server on loopback, workers run by the local
Lambda Invoke endpoint, ``tests/lambda_endpoint.py``, each the real handler in a fresh process).
docs/design/data-path.md."""

from __future__ import annotations

import itertools
import os

import pytest

from bench import data_path_bench as dp
from common import CLIPS_DIR

#: 100 pictures of 640x272: 26 MB as raw I420, more than the 16 MB the Lambda client may pass,
#: so a client that read or wrote every picture once would fail the bound.
BIKES = str(CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4")
_BUCKETS = itertools.count()


def test_boto3_sessions_share_one_data_loader():
    """Each session keeps its own credentials and settings, but botocore's endpoint table and
    service models are read once per process (they were re-read by each session the client made:
    7 x 1.3 MB of endpoints.json)."""
    from storage.s3 import boto3_session

    a, b = boto3_session(), boto3_session()
    assert a is not b and a._session is not b._session
    loader = a._session.get_component("data_loader")
    assert b._session.get_component("data_loader") is loader
    assert len(loader.search_paths) == len(set(loader.search_paths))   # boto3's path not added again
    a.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    loaded = dict(loader._cache)
    b.client("s3", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="y")
    assert loader._cache.keys() == loaded.keys()     # nothing loaded twice: the second client hit the cache


@pytest.mark.slow
def test_lambda_client_passes_under_16_mb_and_the_output_is_the_local_runs(s3_server):
    if not os.path.exists("/proc/self/io"):
        pytest.fail("the measure reads /proc/self/io (Linux)")
    local = dp.measure(BIKES, 2)
    assert local["raw"] > dp.FIXED                 # a raw funnel would break the bounds below
    assert local["moved"] <= local["target"], local["moved"]  # 3x compressed + 16 MB
    m = dp.measure_lambda(BIKES, 2, s3_server, local_output=local["output"],
                          bucket=f"data-path-test-{next(_BUCKETS)}")
    assert m["invocations"] >= 2 and m["workers_cpu"] > 0   # the handlers did the work
    assert m["same_frames"], "the Lambda run's VP8 frames differ from the local run's"
    assert m["moved"] <= dp.FIXED, f"the client passed {m['moved']:,} bytes on the Lambda path"
    print(f"\nclient bytes: local workers {local['moved']:,}, Lambda {m['moved']:,} "
          f"(raw video {m['raw']:,}); client CPU {m['client_cpu']:.2f} s")
