"""The ticket file: bit-for-bit round trip, compact masks, safe and strict loading."""

import io
import os
import pickle

import pytest
import torch

from ticketx import masks as M
from ticketx import pruning
from ticketx import ticket as ticketfile
from ticketx.errors import TicketxError


def _ticket(rounds=3):
    g = torch.Generator().manual_seed(0)
    rewind = {"conv.weight": torch.randn(16, 3, 3, 3, generator=g), "conv.bias": torch.randn(16, generator=g),
              "bn.running_mean": torch.randn(16, generator=g), "fc.weight": torch.randn(10, 400, generator=g)}
    weights = {n: rewind[n] for n in ("conv.weight", "fc.weight")}
    mask = M.ones_like(weights)
    masks = []
    for _ in range(rounds):
        mask = pruning.magnitude(weights, mask, 0.2)
        masks.append(mask)
    meta = {"model": "toy", "rounds": [{"round": r, "density": M.density(masks[r - 1]) if r else 1.0, "test_acc": 0.5}
                                       for r in range(rounds + 1)], "nested": {"a": [1, 2.5, None, True, "x"]}}
    return ticketfile.make(meta, masks, rewind), masks


def test_round_trip_bit_for_bit(tmp_path):
    t, masks = _ticket()
    path = tmp_path / "t.pt"
    ticketfile.save(t, path)
    back = ticketfile.load(path)
    assert back.meta == t.meta
    assert back.num_rounds == 3
    for r in range(1, 4):
        m = back.mask(r)
        assert all(torch.equal(m[n], masks[r - 1][n]) for n in m)
    assert all(m.all() for m in back.mask(0).values())
    for n, v in t.rewind.items():
        assert torch.equal(back.rewind[n], v) and back.rewind[n].dtype == v.dtype
    # a plain torch.load with weights_only=True opens it
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "ticketx-ticket"


def test_masks_take_at_most_an_eighth_of_bool_tensors(tmp_path):
    t, masks = _ticket(rounds=5)
    assert t.packed.numel() <= 5 * ((16 * 27 + 4000 + 7) // 8)  # at most one bit per weight per round
    assert t.bits[0] == 16 * 27 + 4000 and t.bits[1] == M.count(masks[0])[0]  # nested: only live weights
    # as files, with a realistic layer size (file headers are a fixed ~1 kB)
    g = torch.Generator().manual_seed(0)
    big, cur = [], {"a": torch.ones(300, 784, dtype=torch.bool), "b": torch.ones(100, 300, dtype=torch.bool)}
    for _ in range(5):  # masks that shrink by 20% a round, as IMP's do
        cur = {n: m & (torch.rand(m.shape, generator=g) > 0.2) for n, m in cur.items()}
        big.append(cur)
    bools, packed = io.BytesIO(), io.BytesIO()
    torch.save(big, bools)
    torch.save(ticketfile.make({"rounds": []}, big, {}).packed, packed)
    assert len(packed.getvalue()) <= len(bools.getvalue()) / 8
    ints = io.BytesIO()
    torch.save([{n: m.int() for n, m in mask.items()} for mask in big], ints)
    assert len(packed.getvalue()) <= len(ints.getvalue()) / 32


def test_round_for_density():
    t, _ = _ticket()
    assert t.round_for_density(1.0) == 0
    assert t.round_for_density(0.8) == 1
    assert t.round_for_density(0.5) == 3


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ticketx_pwned",))


def test_malicious_pickle_is_rejected_without_running(tmp_path):
    marker = "/tmp/ticketx_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "ticketx-ticket", "payload": _Evil()}, path)
    with pytest.raises(TicketxError, match="refusing to load"):
        ticketfile.load(path)
    assert not os.path.exists(marker)
    # also a raw pickle (not a zip archive)
    path2 = tmp_path / "evil2.pt"
    path2.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(TicketxError):
        ticketfile.load(path2)
    assert not os.path.exists(marker)


def test_truncated_foreign_and_newer_files_rejected(tmp_path):
    t, _ = _ticket()
    path = tmp_path / "t.pt"
    ticketfile.save(t, path)
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TicketxError, match="truncated|corrupted"):
        ticketfile.load(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(TicketxError, match="not a ticketx ticket"):
        ticketfile.load(tmp_path / "foreign.pt")
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "new.pt")
    with pytest.raises(TicketxError, match="version 99"):
        ticketfile.load(tmp_path / "new.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(TicketxError):
        ticketfile.load(tmp_path / "text.pt")
    with pytest.raises(TicketxError, match="not found"):
        ticketfile.load(tmp_path / "missing.pt")


def test_check_model_lists_mismatches():
    t, _ = _ticket()
    net = torch.nn.Module()
    net.conv = torch.nn.Conv2d(3, 8, 3)
    with pytest.raises(TicketxError) as err:
        ticketfile.check_model(t, net)
    msg = str(err.value)
    assert "conv.weight" in msg and "(16, 3, 3, 3)" in msg and "fc.weight" in msg
