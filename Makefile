# excamera: `make demo` and `make test` are all a fresh machine needs (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench docs protos clean

# Our modules' bytecode, written before each target: every worker process and CLI run then loads
# it rather than compiling the sources (Python reads __pycache__ even where
# PYTHONDONTWRITEBYTECODE stops it writing there, as on CI); pip does the same for installed wheels.
BYTECODE = $(BIN)/python -m compileall -q -j0 awslambda codec foundation coordinator excamera media pipeline protos rendezvous security storage worker

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,aws,vision,docs]'
	@echo "compiling the numba kernels once (cached for every later run)..."
	$(BIN)/python -m excamera decode demo/foreman_cif_60f.ivf > /dev/null
	$(BIN)/python -m excamera ssim tests/data/clips/RTn23_80x44p15_15f.y4m tests/data/clips/RTn23_80x44p15_15f.y4m > /dev/null
	$(BIN)/python -m excamera vp8enc tests/data/clips/RTn23_80x44p15_15f.y4m --frames 2 -o $(VENV)/warm.ivf > /dev/null
	rm -f $(VENV)/warm.ivf
	@echo "compiling the kernels ahead of time (about two minutes; see codec/aot.py)..."
	$(BIN)/python -m excamera.aot_build || echo "warning: no compiled kernels (see above); numba's JIT will be used"
	touch $(STAMP)

test: $(STAMP)
	$(BYTECODE)
	$(BIN)/pytest -q tests
	NUMBA_DISABLE_JIT=1 $(BIN)/pytest -q -m nojit tests
	# Bounds-checked kernels compile into their own cache, so this lane really checks bounds.
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(CURDIR)/$(VENV)/numba-boundscheck \
		$(BIN)/pytest -q tests/test_conformance.py tests/test_fuzz.py tests/test_enckernels.py tests/test_encoder.py
	$(MAKE) docs

# The documentation site, into site/ (git-ignored). --strict: a broken link or a reference page
# that cannot be generated (docs/hooks.py reads the CLI parser and the registries) fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

demo: $(STAMP)
	$(BYTECODE)
	PATH="$(CURDIR)/$(BIN):$$PATH" demo/run_demo.sh

# make bench BENCH_ENCODE_ARGS=--quick BENCH_EXCAMERA_ARGS=--quick for fast encode benches
# (see bench/encode_bench.py --help and bench/excamera_bench.py --help); the last line:
# excamera encode --workers 2 against vpxenc --threads=2 (bench/distributed_bench.py; QCIF, then 720p);
# then bench/render.py writes docs/benchmarks.md and the README's table from bench/results.json.
BENCH_ENCODE_ARGS ?=
BENCH_EXCAMERA_ARGS ?=
bench: $(STAMP)
	$(BYTECODE)
	$(BIN)/python -m excamera.aot_build --if-stale
	$(BIN)/python bench/decode_bench.py
	$(BIN)/python bench/encode_bench.py $(BENCH_ENCODE_ARGS)
	$(BIN)/python bench/excamera_bench.py $(BENCH_EXCAMERA_ARGS)
	$(BIN)/python bench/lambda_launch_bench.py
	$(BIN)/python bench/lambda_cold_start_bench.py
	$(BIN)/python bench/lambda_projection.py
	$(BIN)/python bench/pipeline_bench.py --dispatch
	$(BIN)/python bench/grayscale_bench.py --workers 2 --schedulers --deadline 25 --steal
	$(BIN)/python bench/runtime_bench.py --workers 1000
	$(BIN)/python bench/journal_bench.py
	$(BIN)/python bench/frozen_bench.py
	$(BIN)/python bench/distributed_bench.py --workers 2
	$(BIN)/python bench/distributed_bench.py --workers 2 --clip ../shared/testdata/clips/compressed/bigbuckbunny.mp4
	$(BIN)/python bench/data_path_bench.py --workers 2
	$(BIN)/python bench/plan_bench.py
	# Every bench above recorded its figures in bench/results.json: the tables follow from them.
	$(BIN)/python bench/render.py

# Regenerate the committed protobuf/gRPC modules (grpcio-tools is needed only here, pinned so the
# output is reproducible; tests/test_protos.py fails when the committed modules are stale).
PROTOS := protos/common.proto protos/coordinator.proto protos/jobs.proto protos/rendezvous.proto
protos: $(STAMP)
	$(BIN)/pip install -q -e '.[protos]'
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -I. --grpc_python_out=. $(filter-out protos/common.proto,$(PROTOS))
	cd protos && sha256sum $(notdir $(PROTOS)) > PROTOS.sha256

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
