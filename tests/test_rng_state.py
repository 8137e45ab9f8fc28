"""Checkpointed RNG states: the CPU generator always, each CUDA device's when CUDA is in use."""

from __future__ import annotations

import io

import pytest
import torch

from lstm_harness.training import rng
from lstm_harness.training.rng import CPU_KEY, CUDA_KEY, restore_rng_state, rng_state


def test_cpu_state_round_trips_through_a_checkpoint():
    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = torch.rand(5)
    torch.rand(7)  # move on
    restore_rng_state(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert torch.equal(torch.rand(5), expected)


class FakeCuda:
    """torch.cuda's RNG functions for ``count`` devices, recording what is set."""

    def __init__(self, count: int, initialised: bool = True) -> None:
        self.count, self.initialised = count, initialised
        self.states = [torch.full((4,), i, dtype=torch.uint8) for i in range(count)]
        self.set: dict[int, torch.Tensor] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = rng.torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "is_initialized", lambda: self.initialised)
        monkeypatch.setattr(cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(cuda, "set_rng_state",
                            lambda state, device: self.set.__setitem__(device, state))


def test_cuda_states_are_saved_and_restored_per_device(monkeypatch):
    fake = FakeCuda(2)
    fake.install(monkeypatch)
    saved = rng_state()
    assert set(saved) == {CPU_KEY, CUDA_KEY} and len(saved[CUDA_KEY]) == 2
    restore_rng_state(saved)
    assert sorted(fake.set) == [0, 1]
    assert all(torch.equal(fake.set[i], fake.states[i]) for i in range(2))


def test_cuda_state_is_left_out_before_cuda_is_used(monkeypatch):
    FakeCuda(1, initialised=False).install(monkeypatch)
    assert set(rng_state()) == {CPU_KEY}


def test_resume_on_fewer_devices_and_old_checkpoints(monkeypatch):
    fake = FakeCuda(1)
    fake.install(monkeypatch)
    restore_rng_state({CPU_KEY: torch.get_rng_state(), CUDA_KEY: FakeCuda(3).states})
    assert list(fake.set) == [0]
    fake.set.clear()
    restore_rng_state({CPU_KEY: torch.get_rng_state()})  # written before CUDA states were kept
    assert fake.set == {}
