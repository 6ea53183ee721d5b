"""The hint head (issue 25): a curator's points carried over the shipped net's features to the
regions that belong with them, stopped by strong edges, used only under the net it was trained
on; and its training, end to end on a tiny pack."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.model import train_hinthead
from pipeline.worker import hinthead
from pipeline.worker.engine import Colorizer


@pytest.fixture(scope="module")
def shipped():
    return Colorizer(None, device="cpu", size=256)


def test_the_shipped_head_is_used_under_the_shipped_net_only(shipped, ckpt):
    import hashlib

    from pipeline.client.state import HINT_HEAD

    assert shipped.hint_head() is not None
    other = Colorizer(ckpt, device="cpu", size=64)
    assert other.hint_head() is None  # another net's features
    # what a hinted row and file name as the hints' model: the head's file, or none
    assert shipped.hint_model() == hashlib.sha256(HINT_HEAD.read_bytes()).hexdigest()
    assert other.hint_model() == "propagation"


def test_the_head_colours_the_hints_region_and_stops_at_a_strong_edge(shipped):
    g = np.full((256, 256), 60, np.uint8)
    g[:, 128:] = 190  # two regions, one strong edge
    base = shipped.predict_ab([g])[0].numpy()
    out = shipped.hinted_ab(g, [(128, 40, 60.0, 40.0)]).numpy()
    far_off = np.hypot(base[0, :, :100] - 60, base[1, :, :100] - 40).mean()  # ~72
    assert np.hypot(out[0, :, :100] - 60, out[1, :, :100] - 40).mean() < 0.25 * far_off  # its region
    assert np.hypot(*(out - base)[:, :, 136:]).max() < 3.0  # the far side moves by < 3 units
    toward = shipped._headed_ab(torch.from_numpy(g), [(128, 40, 60.0, 40.0)], shipped.hint_head())[1]
    assert np.hypot(*(toward.numpy() - base)[:, :, 136:]).mean() > 3.0  # which the head alone did


@pytest.mark.parametrize("scene, bound, was", [("hard edge (34 L*)", 1.0, 6.0),
                                                ("soft edge (22 L*, blurred)", 4.5, 40.0)])
def test_a_hint_stays_on_its_side_of_an_edge_as_a_scan_has_it(shipped, scene, bound, was):
    """An edge drawn at the source's size is two or three steps on the net's grid, with a gray
    ring between the regions: one red hint on a coat reddened its wall by 6 units behind a sharp
    34-L* edge and by 46 behind a blurred 22-L* one (the test above draws the edge on the grid
    itself, one step, and never saw it)."""
    from pipeline.model.evaluate import hint_edge_scenes as scenes
    from pipeline.model.evaluate import hint_leak as leak
    from pipeline.worker import hints

    g, coat = scenes()[scene]
    moved, took = leak(shipped, g, coat)  # a*b* units beyond the edge; the coat's share of the hint
    assert moved < bound and took > 0.9, (moved, took)
    hints.SPAN, before = 0.0, hints.SPAN
    try:
        assert leak(shipped, g, coat)[0] > was  # each link's one step alone, as before
    finally:
        hints.SPAN = before


def test_an_untrained_head_changes_nothing_and_two_hints_in_one_cell_meet_halfway():
    head = hinthead.HintHead().eval()
    ab = torch.randn(2, 64, 64) * 20
    f = torch.randn(1, hinthead.FEATURES, 8, 8)
    with torch.no_grad():
        d = hinthead.correction(head, f, ab, torch.full((64, 64), 50.0), [(3, 3, 40.0, 0.0)])
    assert d.shape == (2, 64, 64) and float(d.abs().max()) == 0.0
    hab, mask = hinthead.coarse_planes([(1, 1, 40.0, 0.0), (6, 6, 0.0, 40.0), (20, 9, 5.0, 5.0)], 64)
    assert mask.sum() == 2 and mask[0, 0, 0, 0] == 1 and mask[0, 0, 2, 1] == 1
    assert torch.allclose(hab[0, :, 0, 0] * hinthead.S, torch.tensor([20.0, 20.0]))


def test_the_head_trains_on_a_packs_features_and_exports_for_its_net(tmp_path, photos, ckpt):
    from pipeline.model import gputrain
    from pipeline.model.net import load_checkpoint

    pack = tmp_path / "pack.npz"
    gputrain.pack(str(photos), str(pack), side=32, max_mb=1, log=lambda m: None)
    root = tmp_path / "head"
    train_hinthead.extract(str(pack), str(root), ckpt, log=lambda m: None)
    assert np.load(root / "feats.npy").shape[1:] == (hinthead.FEATURES, 4, 4)
    best, alone = train_hinthead.train(str(root), 1, lr=3e-3, batch=8, every=40, steps=120, log=lambda m: None,
                                       attend=True)
    assert best < 0.8 * alone, (best, alone)  # the hints' colour reaches the validation photos
    trained = hinthead.HintHead(attend=True)
    trained.load_state_dict(torch.load(root / "best.pt")["head"])
    sets = [train_hinthead._arrays(str(root))]
    torch.manual_seed(1)
    first = train_hinthead._validate(trained, sets)
    torch.manual_seed(2)  # the validation's points are its own, whatever the global generator
    assert train_hinthead._validate(trained, sets) == first
    state = torch.load(root / "head.pt")
    torch.save({**state, "best": 0.0}, root / "head.pt")  # a best kept on other draws: scored again
    again, _ = train_hinthead.train(str(root), 1, batch=8, every=5, steps=5, log=lambda m: None)
    assert again > 0.0
    assert torch.load(root / "head.pt")["step"] == 125 and again <= best  # resumed, not restarted
    assert torch.load(root / "head.pt")["arch"]["attend"]  # as it was begun
    with pytest.raises(SystemExit, match="with the lookup"):  # not silently another kind of head
        train_hinthead.train(str(root), 1, batch=8, steps=1, log=lambda m: None, attend=False)
    with pytest.raises(SystemExit, match="without a branch"):
        train_hinthead.train(str(root), 1, batch=8, steps=1, log=lambda m: None, branch=True)
    # a new head from that one, on a second view of the photos (another size) as well
    gputrain.pack(str(photos), str(tmp_path / "whole.npz"), side=48, max_mb=1, log=lambda m: None, whole=True)
    train_hinthead.extract(str(tmp_path / "whole.npz"), str(tmp_path / "whole"), ckpt, log=lambda m: None)
    (tmp_path / "more").mkdir()
    for name in ("feats.npy", "small.npy", "meta.json"):
        (tmp_path / "more" / name).symlink_to(root / name)
    lines = []
    more, alone2 = train_hinthead.train(str(tmp_path / "more"), 1, batch=8, every=10, steps=10, log=lines.append,
                                        also=(str(tmp_path / "whole"),), init=str(root / "best.pt"), decay=True)
    assert "by folder" in lines[-1] and more < 0.8 * alone2, lines  # started trained, not from nothing
    assert torch.load(tmp_path / "more" / "head.pt")["arch"]["attend"]
    # the head grown a branch of its own, trained from the net's layer1 output (extract --low)
    train_hinthead.extract(str(pack), str(tmp_path / "low"), ckpt, log=lambda m: None, low=True)
    assert np.load(tmp_path / "low" / "low.npy").shape[1:] == (64, 16, 16)  # 32 px + 2 x 16 padding, / 4
    grown, alone3 = train_hinthead.train(str(tmp_path / "low"), 1, batch=8, every=10, steps=10, log=lambda m: None,
                                         init=str(root / "best.pt"), branch=True)
    assert grown < 0.8 * alone3
    resumed = torch.load(tmp_path / "low" / "head.pt")
    assert resumed["arch"]["branch"] and any(k.startswith("branch.") for k in resumed["head"])
    train_hinthead.train(str(tmp_path / "low"), 1, batch=8, every=2, steps=2, log=lambda m: None)  # stays one
    assert torch.load(tmp_path / "low" / "head.pt")["step"] == 12
    train_hinthead.export(str(root), tmp_path / "hint_head.pt")
    sha = load_checkpoint(ckpt).sha256
    assert hinthead.load_head(sha, tmp_path / "hint_head.pt").arch()["attend"]
    assert hinthead.load_head("0" * 64, tmp_path / "hint_head.pt") is None


def test_evaluate_scores_hints_with_the_head_and_without_it(tmp_path):
    from pipeline.model.evaluate import evaluate

    d = tmp_path / "photos"
    d.mkdir()
    for i in range(4):  # a dark blue coat on a bright orange wall, and the wall's edge
        px = np.zeros((96, 128, 3), np.uint8)
        px[:] = (230, 150, 60)
        px[20:80, 20 + 10 * i:70 + 10 * i] = (30, 50, 140)
        Image.fromarray(px).save(d / f"c{i}.png")
    s = {}
    for name, head in (("head", None), ("alone", "")):
        s[name] = evaluate(None, str(d), str(tmp_path / name), size=64, hints=(3, 10),
                           hint_head=head, log=lambda *_: None)
    assert "the hint head over the net's features" in (tmp_path / "head" / "eval.md").read_text()
    assert "propagation along edges over the net's colour" in (tmp_path / "alone" / "eval.md").read_text()
    for r in s.values():  # the true colours at 10 points: far closer than the net's own
        assert r["hints_10"]["ab_mse"] < 0.5 * r["model"]["ab_mse"]
    assert s["head"]["hints_3"]["ab_mse"] != s["alone"]["hints_3"]["ab_mse"]


def test_the_lookup_reads_the_hinted_cells_exactly_as_attention_over_them_would():
    torch.manual_seed(3)
    look = hinthead.Lookup(16, 4)
    for p in look.parameters():  # trained-like weights: the zero-initialised ones too
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(3, 16, 6, 7)
    mask = torch.zeros(3, 1, 6, 7)
    mask[1, 0, 2, 3] = 1  # one hint; the third image five; the first none
    mask[2, 0, [0, 1, 4, 5, 5], [0, 6, 2, 3, 6]] = 1
    got = look(x, mask)
    # the same attention written out over every cell, the unhinted ones masked away
    B, C, H, W = x.shape
    q, k, v = look.qkv(x).view(B, 3, 4, 4, H * W).unbind(1)
    pos = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1).view(-1, 2).float()
    s = torch.einsum("bhdi,bhdj->bhij", q, k) / 2.0
    s = s - torch.nn.functional.softplus(look.reach)[None, :, None, None] * 4.0 * torch.cdist(pos, pos) / W
    s = s.masked_fill(mask.view(B, 1, 1, -1) == 0, float("-inf"))
    sink = torch.einsum("bhdi,hd->bhi", q, look.sink)[..., None] / 2.0
    a = torch.softmax(torch.cat([s, sink], -1), -1)[..., :-1]
    want = look.proj(torch.einsum("bhij,bhdj->bhdi", a, v).reshape(B, C, H, W))
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got[0], look.proj.bias[:, None, None].expand(C, H, W))  # no hint: nothing read
    assert not torch.allclose(got[1], got[0])


def test_a_head_that_looks_hints_up_is_exported_and_loaded_as_itself(tmp_path):
    import json

    head = hinthead.HintHead(width=32, attend=True)
    torch.nn.init.normal_(head.out.weight, std=0.1)
    torch.save({"head": head.state_dict(), "step": 1, "val": 0.5, "arch": head.arch()}, tmp_path / "best.pt")
    (tmp_path / "meta.json").write_text(json.dumps({"net_sha256": "ab" * 32, "train": 10}))
    train_hinthead.export(str(tmp_path), tmp_path / "h.pt")
    back = hinthead.load_head("ab" * 32, tmp_path / "h.pt")
    assert back.arch() == {**head.arch(), "attend": True, "width": 32}
    f, ab, m = torch.randn(1, hinthead.FEATURES, 5, 5), torch.zeros(1, 2, 5, 5), torch.zeros(1, 1, 5, 5)
    m[0, 0, 2, 2] = 1
    with torch.no_grad():
        assert torch.equal(back(f, ab, ab + 0.3 * m, m, ab[:, :1]), head(f, ab, ab + 0.3 * m, m, ab[:, :1]))


def test_a_branch_copied_from_the_net_reads_the_nets_own_features(shipped, tmp_path):
    import json

    g = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 64, 64), dtype=np.uint8))
    f, _, low = hinthead.net_parts(shipped.model, shipped._L8, 1.0, g, 16)
    (tmp_path / "meta.json").write_text(json.dumps({"net_sha256": shipped.sha256, "checkpoint": None}))
    head = train_hinthead._with_branch(hinthead.HintHead(attend=True), str(tmp_path))
    with torch.no_grad():
        assert torch.allclose(head.train().own_features(low, 8, 8), f, atol=1e-4)  # its BatchNorm: the net's
    (tmp_path / "meta.json").write_text(json.dumps({"net_sha256": "0" * 64, "checkpoint": None}))
    with pytest.raises(SystemExit, match="another net"):
        train_hinthead._with_branch(hinthead.HintHead(attend=True), str(tmp_path))
