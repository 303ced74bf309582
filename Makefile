# flower-gd: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install fmnist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Gossip Distillation on the embedded digits data, 10 nodes, iid and niid1.
demo: $(STAMP)
	$(PY) -m flower_gd -m app.partition-scheme=iid,niid1 app.output-dir=results/demo
	$(PY) -m flower_gd.report results/demo

test: $(STAMP)
	$(PY) -m pytest

# The foundation measurement on Fashion-MNIST (about 30 min on 2 cores).
fmnist: $(STAMP)
	@test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist \
	  || echo "install dataset-fashion-mnist, or set app.data-dir to the IDX files"
	$(PY) -m flower_gd -m app.dataset=fashion-mnist app.common-limit=12000 \
	  app.partition-scheme=iid,niid1 app.label-source=mixed,ground-truth \
	  app.output-dir=results/fmnist-gossip
	$(PY) -m flower_gd.report results/fmnist-gossip

clean:
	rm -rf results/demo
