"""Per-rank RNG states in checkpoints: each rank resumes its own streams (dropout masks must
differ between ranks), a changed world size reseeds by rank with a warning, and an older
checkpoint with one state still resumes."""

from __future__ import annotations

import logging
import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from electra.pretraining.checkpoint import CheckpointFolder, Checkpointer, rng_state


def _checkpointer(folder, rank: int, world: int) -> Checkpointer:
    torch.manual_seed(0)  # the same weights in every "rank"
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Checkpointer(CheckpointFolder(Path(folder), keep=2), "key", model, optimizer, scheduler,
                        torch.device("cpu"), rank=rank, world=world)


def _seed(value: int) -> None:
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def _draw() -> tuple:
    """What a step after the resume would draw from each RNG."""
    return torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]


def _states_and_draws(world: int) -> tuple[list[dict], list[tuple]]:
    """Each fake rank's RNG states (seeded by rank, as distinct streams) and what it draws next."""
    states, draws = [], []
    for rank in range(world):
        _seed(100 + rank)
        states.append(rng_state(torch.device("cpu")))
        draws.append(_draw())
    return states, draws


def test_each_rank_resumes_its_own_rng_streams(tmp_path):
    states, expected = _states_and_draws(world=2)
    _checkpointer(tmp_path, 0, 2).save(5, [], states)
    got = []
    for rank in range(2):
        _seed(999)  # whatever the process drew before resuming
        assert _checkpointer(tmp_path, rank, 2).resume().step == 5
        got.append(_draw())
    assert got == expected
    assert got[0] != got[1]


def test_another_world_size_reseeds_each_rank_apart_and_warns(tmp_path, caplog):
    states, _ = _states_and_draws(world=2)
    _checkpointer(tmp_path, 0, 2).save(5, [], states)

    def resumed_draws() -> list[tuple]:
        out = []
        for rank in range(3):
            _seed(999)
            _checkpointer(tmp_path, rank, 3).resume()
            out.append(_draw())
        return out

    with caplog.at_level(logging.WARNING, logger="electra.pretraining.checkpoint"):
        first = resumed_draws()
    assert "holds RNG states for 2 process(es), this run has 3" in caplog.text
    assert len({str(d) for d in first}) == 3  # no two ranks share a stream
    assert resumed_draws() == first           # and a rerun reseeds the same way


def test_one_process_saves_its_own_state_without_a_gather(tmp_path):
    checkpointer = _checkpointer(tmp_path, 0, 1)
    assert checkpointer.world == 1 and checkpointer.rank == 0  # no process group: one process
    _seed(7)
    checkpointer.save(3, [])
    expected = _draw()
    _seed(8)
    checkpointer.resume()
    assert _draw() == expected


def test_a_checkpoint_with_one_legacy_state_still_resumes(tmp_path):
    checkpointer = _checkpointer(tmp_path, 0, 1)
    checkpointer.save(3, [])
    path = checkpointer.folder.list()[-1]
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    torch.manual_seed(11)
    state["torch_rng"] = torch.get_rng_state()
    del state["rng"]
    torch.save(state, path / "trainer_state.pt")
    expected = torch.rand(4).tolist()
    torch.manual_seed(12)
    checkpointer.resume()
    assert torch.rand(4).tolist() == expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, folder: str, port: int) -> None:
    """One gloo rank: gather the states into rank 0's checkpoint, then resume its own."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        checkpointer = _checkpointer(folder, rank, world)
        _seed(100 + rank)
        states = checkpointer.gather_rng()  # every rank takes part
        if rank == 0:
            checkpointer.save(1, [], states)
        dist.barrier()
        expected = _draw()
        _seed(999)
        fresh = _checkpointer(folder, None, None)  # rank and world from the process group
        fresh.resume()
        torch.save({"expected": expected, "got": _draw()}, os.path.join(folder, f"draws-{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_each_resume_their_own_state(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    torch.multiprocessing.spawn(_rank_main, args=(2, str(tmp_path), _free_port()), nprocs=2)
    draws = [torch.load(tmp_path / f"draws-{rank}.pt", weights_only=True) for rank in range(2)]
    assert all(d["got"] == d["expected"] for d in draws)
    assert draws[0]["got"] != draws[1]["got"]
