# flower-gd: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test reproduce bench bench-cells bench-study-temperature bench-study-temperature-run bench-replay bench-study-rounds bench-study-rounds-run bench-stall bench-speed bench-speed-fmnist bench-speed-scale bench-study bench-codecs bench-byzantine bench-faults bench-meter deploy-demo fleets fleets-gpu fmnist-gossip install fashion-mnist figures-demo figures-bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# FedAvg gets as many epochs on private data as the local phase: 20 rounds of one epoch.
FEDAVG := app.method=fedavg app.num-server-rounds=20 app.round-epochs=1
# Distributed distillation pulls two peers per round, as gossip-adaptive does.
DD := app.method=dist-distill app.gossip-peers=2

# gossip-adaptive with 2 peers and 2 epochs per round: the study's first stage. On Fashion-MNIST
# `bench-study` chose on validation (results/bench/selection.md) 2 peers, 2 epochs, the local
# student and ratio weighting (code batch 5; batches 3 and 4 chose the fresh student, by less
# than a tenth of a point either way); GA_BEST is that choice, used by the demo and
# bench-faults (the Fashion-MNIST targets, fleets among them, read the current choice:
# GA_CHOSEN). It is also pyproject's default; the Makefile spells it out anyway.
GA_BASE := app.method=gossip-adaptive app.gossip-peers=2 app.round-epochs=2
GA_BEST := $(GA_BASE) app.gossip-student=local

# The comparison on the embedded digits data: 9 methods x {iid, niid1}, 10 nodes, seeds
# DEMO_SEEDS (three: the tables give 95% intervals and paired differences). Every method
# runs at two learning rates; the report compares each at the one chosen on validation.
DEMO_SEEDS ?= 0,1,2
DEMO := app.partition-scheme=iid,niid1 app.output-dir=results/demo app.seed=$(DEMO_SEEDS) \
  app.lr=0.05,0.02
demo: $(STAMP)
	$(PY) -m flower_gd -m app.method=local,gossip,dlad,fedmd,ds-fl,central $(DEMO)
	$(PY) -m flower_gd -m $(GA_BEST) $(DEMO)
	$(PY) -m flower_gd -m $(DD) $(DEMO)
	$(PY) -m flower_gd -m $(FEDAVG) $(DEMO)
	$(PY) -m flower_gd.report results/demo
	$(PY) -m flower_gd.plots all results/demo --out figures/demo

# lint (ruff: pyflakes, style, import order) and the type check (mypy) first: CI enforces both.
# Three pytest workers on two cores: the deployment, `flwr run` and resume tests (marked
# long_running, started first) mostly wait on the processes they start while the other
# workers run the rest. The 15 slowest tests are listed at the end.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 3 --dist loadgroup --durations=15

fashion-mnist:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || \
	  (apt-get update -q && apt-get install -y -q dataset-fashion-mnist) || \
	  (echo "Fashion-MNIST missing: install the Debian package dataset-fashion-mnist, or put" \
	        "the four IDX files in a folder and add app.data-dir=FOLDER"; exit 1)

# The benchmark: Fashion-MNIST, 10 nodes, all five Table I partitions, seeds $(SEEDS)
# (SEEDS=0,1,2,3,4 for five). Settings are chosen on the validation split by `bench-study`
# (results/bench/selection.json); the tables report the test accuracy of what was chosen.
# Every sweep skips finished cells made by this code: rerun `make bench` to go on.
SEEDS ?= 0,1,2
BENCH_DIR ?= results/bench
BENCH := app.dataset=fashion-mnist app.common-limit=6000 app.test-limit=5000 \
  app.output-dir=$(BENCH_DIR) app.seed=$(SEEDS)
PARTITIONS := app.partition-scheme=iid,niid1,niid2,niid3,niid4
SELECTION = $(BENCH_DIR)/selection.json
# (a missing choice stops make: an empty one would run a new candidate at the defaults)
chosen = $(shell $(PY) -m flower_gd.select $(BENCH_DIR) --overrides $(1))$(if $(filter-out 0,$(.SHELLSTATUS)),$(error no choice of $(1) in $(BENCH_DIR)/selection.json: run make bench-study first))
# (the study's two stages make peers and epochs part of the choice: `chosen` names them)
GA_CHOSEN = app.method=gossip-adaptive $(call chosen,gossip-adaptive)
DLAD_CHOSEN = app.method=dlad $(call chosen,dlad)
FEDMD_CHOSEN = app.method=fedmd $(call chosen,fedmd)
DSFL_CHOSEN = app.method=ds-fl $(call chosen,ds-fl)
DD_CHOSEN = $(DD) $(call chosen,dist-distill)
FEDAVG_CHOSEN = $(FEDAVG) $(call chosen,fedavg)
$(SELECTION):
	@echo "$(SELECTION) is missing: run make bench-study first (it chooses on validation)"
	@exit 1
bench: bench-study
	$(MAKE) bench-cells
	$(MAKE) figures-bench

# The comparison's own cells: every tuned method at its setting chosen by `bench-study` (for
# the study's seeds these are its runs, reused), local, paper gossip, central and the codecs.
# `make bench-cells SEEDS=3,4` adds seeds to the comparison without rerunning the study: the
# choice stays the one made on the study's seeds (flower_gd/select.py), the tables and paired
# differences take every seed. Then `make figures-bench` redraws the tables and figures.
bench-cells: $(STAMP) fashion-mnist $(SELECTION)
	$(PY) -m flower_gd -m $(GA_CHOSEN) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(DLAD_CHOSEN) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(FEDAVG_CHOSEN) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(FEDMD_CHOSEN) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(DSFL_CHOSEN) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(DD_CHOSEN) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=local,gossip $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=central app.partition-scheme=iid $(BENCH)
	$(MAKE) bench-codecs

# The candidates, each on every partition and seed (the chosen ones are the bench's cells):
# gossip-adaptive's student (local, fresh) x weighting (ratio, dlad) at 2 peers and 2 epochs
# per round, then the best of those four at 1 peer and 1 epoch per round (the paper's; a
# second stage, `bench-study-rounds`, run by a sub-make once the first is in), then the best
# so far at distillation temperature 2 (a third stage, `bench-study-temperature`, which also
# gives DLAD's best its temperature 2); DLAD's server distillation epochs (10, 20); FedAvg's
# learning rate (0.05, 0.02); FedMD's revisit epochs (2, 1); DS-FL's ERA temperature (0.1,
# 0.02); distributed distillation's weight (1, 5).
# Selection: mean final median validation accuracy over the (partition, seed) cells most
# candidates ran (flower_gd/select.py).
bench-study: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m $(GA_BASE) app.gossip-student=local,fresh \
	  app.gossip-weighting=ratio,dlad $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=dlad app.distill-epochs=10,20 $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(FEDAVG) app.lr=0.05,0.02 $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=fedmd app.revisit-epochs=2,1 $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=ds-fl app.era-temperature=0.1,0.02 $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(DD) app.distill-weight=1.0,5.0 $(PARTITIONS) $(BENCH)
	$(MAKE) bench-study-rounds
	$(MAKE) bench-study-temperature
	$(PY) -m flower_gd.select $(BENCH_DIR)

# gossip-adaptive's second stage: the student and weighting chosen so far, at 1 peer and 1
# epoch per round. It first chooses on what is measured now, then runs a sub-make (make
# expands a recipe's $(shell ...) before its first line runs: the sub-make reads the choice).
bench-study-rounds: $(STAMP) fashion-mnist
	$(PY) -m flower_gd.select $(BENCH_DIR) > /dev/null
	$(MAKE) bench-study-rounds-run

bench-study-rounds-run: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.method=gossip-adaptive app.gossip-peers=1 app.round-epochs=1 \
	  $(filter-out app.gossip-peers=% app.round-epochs=% app.temperature=%,$(call chosen,gossip-adaptive)) \
	  $(PARTITIONS) $(BENCH)

# The third stage: gossip-adaptive's and DLAD's best so far at distillation temperature 2
# (targets softmax(f / 2), the KD loss scaled by T^2; pyproject's default is 1). Each stage
# leaves out the keys it varies from the choice it starts from, so a rerun adds no candidate.
bench-study-temperature: $(STAMP) fashion-mnist
	$(PY) -m flower_gd.select $(BENCH_DIR) > /dev/null
	$(MAKE) bench-study-temperature-run

bench-study-temperature-run: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.method=gossip-adaptive app.temperature=2.0 \
	  $(filter-out app.temperature=%,$(call chosen,gossip-adaptive)) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=dlad app.temperature=2.0 \
	  $(filter-out app.temperature=%,$(call chosen,dlad)) $(PARTITIONS) $(BENCH)

# Payload codecs on gossip-adaptive (its float32 cells are in `bench`): hard4p1 (4-bit label
# and 4-bit log-weight, plus one bit per sample for the top class's probability, deflated:
# 6-8 bits per common sample all in on code batch 5) and hard4p2r1-ac (four top-probability
# levels and the runner-up where least sure, arithmetic-coded) on every partition; uint8 and
# top-2 on niid1 and niid3, top-1 on niid3. The hard-label floor's reference: paper gossip with hard labels
# (a majority vote of argmax labels) on every partition. Seeds SEEDS, as `bench`.
bench-codecs: $(STAMP) fashion-mnist $(SELECTION)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.codec=hard4p1,hard4p2r1-ac $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.codec=uint8,topk app.partition-scheme=niid1 $(BENCH)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.codec=uint8,topk app.partition-scheme=niid3 $(BENCH)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.codec=topk app.codec-topk=1 app.partition-scheme=niid3 $(BENCH)
	$(PY) -m flower_gd -m app.method=gossip app.codec=hard $(PARTITIONS) $(BENCH)

# The codec screen (no training, a few minutes): gossip-adaptive's belief mixing in the bench's
# float32 cells at the default setting (every partition and seed made), replayed under hard4,
# hard4p1 and the candidates of strategies/gossip_replay.py; needs those runs' nodes/ (local).
REPLAY_RUNS = $(sort $(wildcard $(BENCH_DIR)/gossip-adaptive_fashion-mnist_*_cnn_common-limit=6000_test-limit=5000_s[0-9]))
# and niid3's five seeds of the chosen float32 cell (`make bench-codec-seeds`)
REPLAY_SEEDS = $(sort $(wildcard results/codec-seeds/gossip-adaptive_fashion-mnist_niid3_cnn_common-limit=6000_*test-limit=5000_s[0-9]))
bench-replay: $(STAMP)
	$(PY) -m strategies.gossip_replay $(REPLAY_RUNS) --codec float32 --codec hard4 \
	  --codec hard4p1 --codec hard4p2 --codec hard4p1r --codec hard4p2r --codec hard4p2r1 \
	  --codec hard4p1-ac --codec hard4p2r1-ac --fill-own \
	  --exact-weights > $(BENCH_DIR)/replay.txt
	$(PY) -m strategies.gossip_replay $(REPLAY_SEEDS) --codec float32 --codec hard4p1 \
	  --codec hard4p2r1 --codec hard4p2r1-ac > results/codec-seeds/replay.txt
	tail -n 15 $(BENCH_DIR)/replay.txt
	tail -n 6 results/codec-seeds/replay.txt

# The codec goal's hardest partition over five seeds: gossip-adaptive at its chosen setting
# with float32, hard4p1 and hard4p2r1-ac under niid3, seeds 0-4, in results/codec-seeds (its seeds 0-2 are
# bench's own cells: the target copies them, the sweep reuses those made by this code).
# the chosen gossip-adaptive setting as the run names write it (key=value, no app. prefix)
GA_KEYS = $(subst app.,,$(call chosen,gossip-adaptive))
bench-codec-seeds: $(STAMP) fashion-mnist $(SELECTION)
	mkdir -p results/codec-seeds
	for s in 0 1 2; do for c in "" codec=hard4p1 codec=hard4p2r1-ac; do \
	  n=$$(printf '%s\n' $$c common-limit=6000 test-limit=5000 $(GA_KEYS) | sort | paste -sd_ -); \
	  d=$(BENCH_DIR)/gossip-adaptive_fashion-mnist_niid3_cnn_$${n}_s$$s; \
	  if test -e $$d && ! test -e results/codec-seeds/$${d##*/}; then cp -r $$d results/codec-seeds/; fi; \
	done; done
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.codec=float32,hard4p1,hard4p2r1-ac app.partition-scheme=niid3 \
	  app.dataset=fashion-mnist app.common-limit=6000 app.test-limit=5000 \
	  app.output-dir=results/codec-seeds app.seed=0,1,2,3,4
	$(PY) -m flower_gd.report results/codec-seeds

# Byzantine peers (issue 5): 1 and 3 of the 10 nodes send label-flipped lists (FedAvg's train
# on flipped labels), niid1 first, then iid; gossip-adaptive also with the robust mix
# (self-centered clipping). The cells without attackers are `bench`'s own.
BYZ := app.byzantine-nodes=1,3 app.byzantine-attack=flip
bench-byzantine: $(STAMP) fashion-mnist $(SELECTION)
	$(PY) -m flower_gd -m $(GA_CHOSEN) $(BYZ) app.robust-mix=none,clip app.partition-scheme=niid1 $(BENCH)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.robust-mix=clip app.partition-scheme=niid1 $(BENCH)
	$(PY) -m flower_gd -m app.method=gossip $(BYZ) app.partition-scheme=niid1 $(BENCH)
	$(PY) -m flower_gd -m $(DLAD_CHOSEN) $(BYZ) app.partition-scheme=niid1 $(BENCH)
	$(PY) -m flower_gd -m $(FEDAVG_CHOSEN) $(BYZ) app.partition-scheme=niid1 $(BENCH)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.byzantine-nodes=0,3 app.robust-mix=clip app.partition-scheme=iid $(BENCH)
	$(PY) -m flower_gd -m $(GA_CHOSEN) app.byzantine-nodes=3 app.partition-scheme=iid $(BENCH)
	$(PY) -m flower_gd -m app.method=gossip app.byzantine-nodes=3 app.partition-scheme=iid $(BENCH)
	$(PY) -m flower_gd -m $(DLAD_CHOSEN) app.byzantine-nodes=3 app.partition-scheme=iid $(BENCH)
	$(PY) -m flower_gd -m $(FEDAVG_CHOSEN) app.byzantine-nodes=3 app.partition-scheme=iid $(BENCH)
	$(MAKE) figures-bench

# Small private sets: do the defaults leave nodes at chance? `local` (every gossip and DLAD
# node's local phase) and FedAvg on digits (about 26 private images per node) and on
# Fashion-MNIST with 50 and 200 per node, one pass per epoch against at least 10 steps per
# epoch (min-epoch-steps), seeds 0-2. The report counts collapsed and diverged nodes per run.
STALL := app.output-dir=results/stall app.seed=0,1,2 app.min-epoch-steps=1,10
STALL_FMNIST := app.dataset=fashion-mnist app.private-fraction=0.00926,0.037 \
  app.common-limit=2000 app.test-limit=2000
# Then divergence: the bench's Fashion-MNIST niid1 local phase (1080 private images of two
# classes per node) at lr 0.05 without and with gradient clipping (grad-clip 0, 5).
STALL_CLIP := app.dataset=fashion-mnist app.partition-scheme=niid1 app.common-limit=6000 \
  app.test-limit=5000 app.grad-clip=0.0,5.0 app.output-dir=results/stall app.seed=0,1,2
bench-stall: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.method=local app.partition-scheme=iid,niid1 $(STALL)
	$(PY) -m flower_gd -m $(FEDAVG) app.partition-scheme=iid,niid1 $(STALL)
	$(PY) -m flower_gd -m app.method=local $(STALL_FMNIST) $(STALL)
	$(PY) -m flower_gd -m $(FEDAVG) $(STALL_FMNIST) $(STALL)
	$(PY) -m flower_gd -m app.method=local $(STALL_CLIP)
	$(PY) -m flower_gd.report results/stall

# Dead nodes and lost messages on the embedded digits (iid, 10 nodes, seeds SEEDS): each
# method without faults, with 3 nodes dying at round 2, and with 20% of all messages lost.
FAULTS := app.partition-scheme=iid app.output-dir=results/faults app.seed=$(SEEDS)
DROP3 := 'app.drop-nodes="2@2,5@2,8@2"'
bench-faults: $(STAMP)
	$(PY) -m flower_gd -m $(GA_BEST) $(FAULTS)
	$(PY) -m flower_gd -m $(GA_BEST) $(DROP3) $(FAULTS)
	$(PY) -m flower_gd -m $(GA_BEST) app.message-loss=0.2 $(FAULTS)
	$(PY) -m flower_gd -m app.method=gossip,dlad $(FAULTS)
	$(PY) -m flower_gd -m app.method=gossip,dlad $(DROP3) $(FAULTS)
	$(PY) -m flower_gd -m app.method=gossip,dlad app.message-loss=0.2 $(FAULTS)
	$(PY) -m flower_gd -m $(FEDAVG) $(FAULTS)
	$(PY) -m flower_gd -m $(FEDAVG) $(DROP3) $(FAULTS)
	$(PY) -m flower_gd -m $(FEDAVG) app.message-loss=0.2 $(FAULTS)
	$(PY) -m flower_gd.report results/faults

# Flower's deployment engine on loopback: a SuperLink and 3 SuperNodes with TLS (self-signed
# CA) and SuperNode authentication, one unregistered intruder (refused), 2 gossip rounds;
# every process is stopped by PID at the end. Results and logs: results/deploy/.
deploy-demo: $(STAMP)
	rm -rf results/deploy
	$(PY) -m flower_gd.deploy --nodes 3 --rounds 2 --tls --auth --intruder --out results/deploy

# Where a run's time goes: one niid1 cell per method, wall against the nodes' own work, and
# the training loop against a plain PyTorch loop; results/speed/<dataset>/results.md.
bench-speed: $(STAMP)
	rm -rf results/speed/digits
	$(PY) -m flower_gd.speed --dataset digits --out results/speed

bench-speed-fmnist: $(STAMP) fashion-mnist
	rm -rf results/speed/fashion-mnist
	$(PY) -m flower_gd.speed --dataset fashion-mnist --out results/speed

# Scale in nodes: gossip-adaptive and DLAD on Fashion-MNIST with 10, 50 and 100 nodes.
bench-speed-scale: $(STAMP) fashion-mnist
	rm -rf results/speed/scale
	$(PY) -m flower_gd.speed --scale 10 50 100 --out results/speed

# The meter against the wire: gossip, gossip-adaptive, DLAD and FedAvg deployed on loopback
# (3 SuperNodes, 2 rounds, digits), every SuperNode dialling the SuperLink through a
# byte-counting proxy; table in results/meter/results.md.
bench-meter: $(STAMP)
	rm -rf results/meter
	$(PY) -m flower_gd.meter_check --out results/meter

# Mixed fleets (Table VI analogue) at CPU scale on Fashion-MNIST: the CNN at two widths and
# MobileNetV3-small with the small-image stem, assigned round-robin (4 cnn, 3 cnn-wide, 3
# mobilenet_v3_small of the 10 nodes); seeds SEEDS, each method at its setting chosen on the
# bench's validation runs. gossip-adaptive also with the teacher-assistant option (each node
# pulls from the next larger family). 2000 common and 2000 test samples, not the bench's 6000
# and 5000: on 2 cores one fleet's local phase took 403 s (a mobilenet node 132-197 s, a CNN
# 11-46 s) and each round costs the mobilenet nodes most. One partition at a time
# (FLEET_PARTITIONS, label skew first), every method of it before the next. `model` lists
# families joined by "+" (or ","). FedAvg cannot average different architectures; the config
# refuses it with a clear error.
FLEET_PARTITIONS ?= niid1 iid
FLEETS := app.dataset=fashion-mnist app.common-limit=2000 app.test-limit=2000 \
  app.model=cnn+cnn-wide+mobilenet_v3_small app.output-dir=results/fleets app.seed=$(SEEDS)
fleets: $(STAMP) fashion-mnist $(SELECTION)
	set -e; for p in $(FLEET_PARTITIONS); do \
	  $(PY) -m flower_gd -m $(GA_CHOSEN) app.gossip-assist=none,next-larger app.partition-scheme=$$p $(FLEETS); \
	  $(PY) -m flower_gd -m $(DLAD_CHOSEN) app.partition-scheme=$$p $(FLEETS); \
	  $(PY) -m flower_gd -m app.method=gossip app.partition-scheme=$$p $(FLEETS); \
	  $(PY) -m flower_gd -m $(FEDMD_CHOSEN) app.partition-scheme=$$p $(FLEETS); \
	  $(PY) -m flower_gd -m $(DSFL_CHOSEN) app.partition-scheme=$$p $(FLEETS); \
	done
	$(PY) -m flower_gd.report results/fleets

# The same fleets at paper scale, for a GPU machine (CIFAR-10 files in data/cifar10 or
# app.download=true with network access; 200 local epochs as in the paper).
FLEETS_GPU := app.dataset=cifar10 app.partition-scheme=iid,niid1 app.local-epochs=200 \
  app.model=resnet18+mobilenet_v3_small,resnet18+densenet121 app.output-dir=results/fleets-gpu
fleets-gpu: $(STAMP)
	$(PY) -m flower_gd -m app.method=gossip,dlad $(FLEETS_GPU)
	$(PY) -m flower_gd -m $(GA_BEST) $(FLEETS_GPU)
	$(PY) -m flower_gd.report results/fleets-gpu

# Issue 2's measurement: honest gossip and the ground-truth leak, on the bench's data
# settings (6000 common samples, 5000 test samples), seeds SEEDS.
fmnist-gossip: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.dataset=fashion-mnist app.common-limit=6000 app.test-limit=5000 \
	  app.partition-scheme=iid,niid1 app.label-source=mixed,ground-truth \
	  app.output-dir=results/fmnist-gossip app.seed=$(SEEDS)
	$(PY) -m flower_gd.report results/fmnist-gossip

# Every table and figure the README shows, one target after another. Each sweep skips the
# cells this code already finished, so an interrupted `make reproduce` goes on where it
# stopped; the speed tables come last (they time the machine, so run nothing beside them) and
# are always measured anew.
reproduce: demo bench-faults bench bench-codec-seeds bench-byzantine fleets fmnist-gossip \
  bench-stall bench-meter deploy-demo bench-speed bench-speed-fmnist bench-speed-scale
	$(MAKE) figures-bench
.NOTPARALLEL: reproduce

# Tables and figures from the saved runs alone (no run is re-executed).
figures-demo: $(STAMP)
	$(PY) -m flower_gd.report results/demo
	$(PY) -m flower_gd.plots all results/demo --out figures/demo

figures-bench: $(STAMP)
	$(PY) -m flower_gd.report $(BENCH_DIR)
	$(PY) -m flower_gd.plots all $(BENCH_DIR) --out figures/bench

clean:
	rm -rf results/demo figures/demo
