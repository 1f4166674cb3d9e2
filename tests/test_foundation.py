"""foundation: the one registry type, the error base and its one-line formatter; and that the
project keeps to them (every plug-in kind is a Registry, every error a user can cause is an
ExcameraError, a launcher that gives only ``launch`` runs a job)."""

import asyncio
import configparser
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from foundation.errors import ExcameraError, one_line
from foundation.registry import DuplicateName, Registry, UnknownName

ROOT = Path(__file__).resolve().parent.parent


# -- Registry ------------------------------------------------------------------------------------

def test_registry_names_aliases_and_lookups():
    r = Registry("widget")
    r.add("b", 2)

    @r.register("a", aliases=("alpha", "first"))
    def a():
        return 1

    assert r.get("a") is a and r.get("alpha") is a and r.get("b") == 2
    assert r.canonical("first") == "a" and r.canonical("b") == "b"
    assert r.names() == ["a", "b"] and r.names(aliases=True) == ["a", "b", "alpha", "first"]
    assert "alpha" in r and "c" not in r and 3 not in r and len(r) == 2
    assert [n for n, _ in r.items()] == ["a", "b"]


def test_registry_unknown_name_lists_the_choices():
    r = Registry("widget")
    r.add("x", 1)
    r.add("y", 2)
    with pytest.raises(UnknownName) as e:
        r.get("z")
    assert str(e.value) == "unknown widget 'z' (known: x, y)"     # not KeyError's quoted repr
    assert isinstance(e.value, ExcameraError) and isinstance(e.value, KeyError)
    with pytest.raises(UnknownName, match="known: none"):
        Registry("widget").canonical("z")


def test_registry_refuses_a_second_entry_under_a_taken_name():
    r = Registry("widget")
    r.add("x", 1, aliases=("ex",))
    for name in ("x", "ex"):
        with pytest.raises(DuplicateName, match=f"widget '{name}' is already registered"):
            r.add(name, 2)
    with pytest.raises(DuplicateName):
        r.add("new", 3, aliases=("x",))
    assert "new" not in r and r.get("x") == 1            # a refused add leaves nothing behind


def test_registry_takes_the_same_definition_twice():
    r = Registry("widget")

    def f():
        pass

    r.add("f", f)
    r.add("f", f)                                        # the same object again

    def again():                                          # a module imported twice: same qualname
        pass
    again.__qualname__, again.__module__ = f.__qualname__, f.__module__
    r.add("f", again)
    assert r.names() == ["f"]


def test_a_registry_raises_its_packages_own_errors():
    class MyError(ExcameraError):
        pass

    r = Registry("gadget", error=MyError, duplicate=MyError)
    r.add("a", 1)
    with pytest.raises(MyError, match="unknown gadget 'b'"):
        r.get("b")
    with pytest.raises(MyError, match="already registered"):
        r.add("a", 2)


# -- errors --------------------------------------------------------------------------------------

def test_one_line():
    assert one_line(ValueError("bad\n  input\tat  frame 3")) == "bad input at frame 3"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x")) == "No such file or directory"
    assert one_line(OSError("plain")) == "plain"                 # no strerror: the message
    assert one_line(KeyError()) == "KeyError"                     # no message: the class
    assert issubclass(ExcameraError, ValueError)


def _project_modules() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = [p.strip() for p in cfg.get("options", "packages").splitlines() if p.strip()]
    names = set(packages)
    for p in packages:
        for info in pkgutil.iter_modules(importlib.import_module(p).__path__, p + "."):
            if not info.name.endswith(".__main__"):       # runs the CLI on import
                names.add(info.name)
    return sorted(names)


#: Exception classes that are deliberately not ExcameraErrors. Keep it short; say why.
NOT_USER_ERRORS = {
    # A bug in the engine's lifecycle tables, not something input can cause: RuntimeError.
    "coordinator.engine.LifecycleError",
    # A job that ran and failed: a RuntimeError carrying the job's status, caught by name
    # (``except JobFailed``); making it a ValueError would let ``except ValueError`` swallow it.
    "coordinator.api.JobFailed",
    # The CLI's own failures, raised and caught by name inside excamera/ (CliError: exit 1 with
    # its line; UsageError: exit 2). As ValueErrors, a command's ``except ValueError`` around
    # code that raises them would catch and re-word them (UsageError would then exit 1).
    "excamera.commands.base.CliError",
    "excamera.commands.base.UsageError",
}


def test_every_error_a_user_can_cause_is_an_excamera_error():
    modules = _project_modules()
    assert {"codec.errors", "pipeline.stage", "worker.ops", "coordinator.launcher"} <= set(modules)
    seen, wrong = set(), []
    for name in modules:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, BaseException) or cls.__module__ != name:
                continue                                  # not an exception, or defined elsewhere
            qual = f"{name}.{cls.__qualname__}"
            seen.add(qual)
            if qual not in NOT_USER_ERRORS and not issubclass(cls, ExcameraError):
                wrong.append(f"{qual}{tuple(b.__name__ for b in cls.__bases__)}")
    assert not wrong, "not ExcameraErrors (subclass it, or list them in NOT_USER_ERRORS with why): " \
        + ", ".join(wrong)
    assert NOT_USER_ERRORS <= seen, f"stale NOT_USER_ERRORS entries: {sorted(NOT_USER_ERRORS - seen)}"
    assert len(seen) >= 30                                # the walk found the project's errors


def test_errors_keep_the_builtin_bases_callers_catch():
    from codec.errors import CorruptFrameError, VP8Error
    from coordinator.engine import LifecycleError
    from media.firstpass import FirstPassError
    from pipeline.stages.vision import MissingExtra
    from worker.ops import OperationError, UnknownOperation

    assert issubclass(CorruptFrameError, VP8Error) and issubclass(CorruptFrameError, ValueError)
    assert issubclass(VP8Error, ExcameraError)
    assert issubclass(FirstPassError, RuntimeError) and issubclass(FirstPassError, ExcameraError)
    assert issubclass(MissingExtra, ImportError) and issubclass(MissingExtra, ExcameraError)
    assert issubclass(UnknownOperation, OperationError)
    assert issubclass(LifecycleError, RuntimeError) and not issubclass(LifecycleError, ExcameraError)


# -- the five plug-in kinds ------------------------------------------------------------------------

def test_every_plugin_kind_is_a_registry():
    from coordinator.launcher import LAUNCHERS, LocalLauncher
    from pipeline.delivery import DELIVERIES
    from pipeline.schedulers import SCHEDULERS, StreamingScheduler
    from pipeline.stage import STAGES, all_stages
    from worker.ops import DEFAULT, OPERATIONS

    for r in (STAGES, DELIVERIES, OPERATIONS, SCHEDULERS, LAUNCHERS):
        assert isinstance(r, Registry)
    assert "decode" in all_stages() and "decode" in STAGES
    assert {"default", "pair", "serialized_frames", "serialized_scenes", "with_previous"} <= set(DELIVERIES.names())
    assert DELIVERIES.canonical("pair_delivery_func") == "pair"
    assert OPERATIONS is DEFAULT and "echo" in OPERATIONS
    assert SCHEDULERS.names() == ["fifo", "priority", "streaming"]
    assert SCHEDULERS.get("streaming") is StreamingScheduler
    assert LAUNCHERS.get("local") is LocalLauncher


def test_a_stage_registered_twice_is_refused_with_a_stage_error():
    from pipeline.stage import StageError, stage

    with pytest.raises(StageError, match="stage 'decode' is already registered"):
        stage("decode", inputs={}, outputs={})(lambda ctx, inputs, config: {})


def test_a_user_delivery_function_declared_with_the_decorator():
    from pipeline.delivery import DELIVERIES, default, delivery, get_delivery
    from pipeline.stage import Option

    opts = {"n": Option(int, 2, "how many")}
    try:
        @delivery("t_foundation_deliver", ports=1, options=opts)
        def deliver(node, waiting, end):
            return default(node, waiting, end)

        by_name = get_delivery("t_foundation_deliver")
        assert by_name.fn is deliver and by_name.ports == 1 and by_name.options == opts
        # Named module:function, it keeps that name and the decorator's declaration.
        import sys
        sys.modules[__name__].t_foundation_deliver = deliver
        by_path = get_delivery(f"{__name__}:t_foundation_deliver")
        assert (by_path.name, by_path.fn, by_path.ports, by_path.options) == \
            (f"{__name__}:t_foundation_deliver", deliver, 1, opts)
    finally:
        DELIVERIES._entries.pop("t_foundation_deliver", None)
        sys.modules[__name__].__dict__.pop("t_foundation_deliver", None)


def test_both_launchers_are_launchers(tmp_path):
    from awslambda.launcher import LambdaLauncher
    from coordinator.launcher import LAUNCHERS, BaseLauncher, Launcher, LocalLauncher
    from security import tls

    local = LocalLauncher(str(tmp_path))
    cloud = LambdaLauncher(tls.generate(), "fn", ["us-east-1"])
    for launcher in (local, cloud):
        assert isinstance(launcher, Launcher) and isinstance(launcher, BaseLauncher)
    assert LAUNCHERS.get("lambda") is LambdaLauncher
    assert cloud.errors() == [] and cloud.reap() == [] and cloud.pids() == []
    assert local.errors() == [] and local.reap() == [] and local.pids() == []
    # Every method the protocol names, the base gives (so the coordinator never probes).
    wanted = {n for n in dir(Launcher) if not n.startswith("_")} - {"coordinator"}
    assert wanted == {"launch", "reap", "errors", "note_connected", "cost", "pids", "stop"}
    assert all(callable(getattr(BaseLauncher, n)) for n in wanted)


def test_a_launcher_that_gives_only_launch_runs_a_job(tmp_path):
    """The coordinator calls reap, errors, note_connected, cost and stop on every launcher: a
    launcher giving only ``launch`` (workers as tasks on this loop) runs a job to the end."""
    from coordinator.fsm import DONE, FSM, Job, State, Task
    from coordinator.launcher import BaseLauncher
    from coordinator.server import Coordinator
    from security import tls
    from worker.runtime import run_worker

    job = Job("echo", (FSM("e", "a", (State("a", "echo", {"text": "${task_id}"}, {"ok": DONE}),)),),
              tuple(Task(f"t{i}", "e") for i in range(3)))

    class InLoop(BaseLauncher):
        def __init__(self, bundle):
            self.bundle, self.workers, self.launched = bundle, [], 0

        def launch(self, job_id, workers):
            self.launched += len(workers)
            self.workers += [asyncio.ensure_future(run_worker(self.coordinator, self.bundle, job_id, wid, tok))
                             for wid, tok in workers]

    async def go():
        bundle = tls.generate()
        launcher = InLoop(bundle.for_worker())
        c = Coordinator(bundle, str(tmp_path), launcher=launcher)
        await c.start()
        try:
            job_id, _ = await c.submit(job, workers=2)
            outcome = await asyncio.wait_for(c.wait(job_id), 60)
            tl = c.timeline(job_id)
            ends = await asyncio.wait_for(asyncio.gather(*launcher.workers), 60)
        finally:
            await c.stop()
        return outcome, tl, ends, launcher.launched

    outcome, tl, ends, launched = asyncio.run(go())
    assert outcome.status == "succeeded", outcome.error
    assert launched == 2 and all(e.startswith("shutdown") for e in ends), ends
    assert "cost" not in tl                              # the base's cost: None, not reported
