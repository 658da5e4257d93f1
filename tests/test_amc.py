"""AMC: the clipping keeps every episode within the MACs budget, the result lands in the band,
the search is seeded, the kept filters are the L1-largest; prune.py --method amc."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tas
from tas.baselines import named_convs
from tas.baselines.amc import DDPGAgent, PruningEnv, amc_prune, fill_budget, recalibrate_bn
from tests.cli_helpers import run_script
from tests.test_cli_errors import assert_user_error


@pytest.fixture(scope="module")
def net_and_images():
    """A ResNet-8 with random weights and distinct BN statistics, and 32 random images labelled
    by the network itself (the full network scores 1.0, pruned ones less). Its head reads the 10
    features that vary most over the images, standardised: a random head gives every image the
    same class."""
    torch.manual_seed(0)
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(8)))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.running_mean, std=0.1)
            m.running_var.uniform_(0.5, 2.0)
    model.eval().requires_grad_(False)
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)  # (32, 64)
        dims = features.std(0).topk(10).indices
        mean, std = features[:, dims].mean(0), features[:, dims].std(0)
        model.head.weight.zero_()
        model.head.weight[torch.arange(10), dims] = 1 / std
        model.head.bias.copy_(-mean / std)
        y = model(x).argmax(1)
    assert len(y.unique()) >= 8
    return model, [(x[:16], y[:16]), (x[16:], y[16:])]


def _search(net_and_images, ratio: float, **kw):
    model, images = net_and_images
    episodes = []
    arch, keep = amc_prune(model, ratio, images, progress=episodes.append, **kw)
    return arch, keep, episodes


@pytest.mark.parametrize("ratio", [0.35, 0.6])
def test_every_episode_fits_the_budget_and_the_result_lands_in_the_band(net_and_images, ratio):
    arch, keep, episodes = _search(net_and_images, ratio, episodes=8, warmup=3)
    full = tas.Arch.full(arch.space).macs
    assert [e.episode for e in episodes] == list(range(1, 9))
    assert [e.sigma is None for e in episodes] == [True] * 3 + [False] * 5
    for e in episodes:
        assert e.macs <= ratio * full
        assert all(0.0 <= r <= 0.8 for r in e.ratios.values())
        assert 0.0 <= e.reward <= 1.0
    assert 0.98 * ratio * full <= arch.macs <= ratio * full
    record = arch.search["amc"]
    assert arch.search["method"] == "amc" and record["episodes"] == 8 and record["images"] == 32
    best = max(episodes, key=lambda e: e.reward)  # the first of the best
    assert record["best_episode"] == best.episode and record["ratios"] == best.ratios
    assert record["rewards"] == [round(e.reward, 5) for e in episodes]
    # the result only grows the best episode's convs back
    for name, pruned in best.ratios.items():
        assert arch.widths[name] >= round((1 - pruned) * arch.space.conv(name).channels)


def test_clipping_raises_the_action_exactly_as_much_as_the_budget_needs(net_and_images):
    model, _ = net_and_images
    env = PruningEnv(model, 0.5)
    full = tas.Arch.full(model.space)
    assert len(env.state(0, {}, 0.0)) == PruningEnv.FEATURES
    widths = {}
    for t, name in enumerate(env.layers):  # an agent that never wants to prune
        widths[name] = env.clip(t, widths, env.width(t, 0.0))
        later = {n: env.min_width[n] for n in env.layers[t + 1 :]}
        fits = lambda w, name=name, later=later: (
            tas.Arch(full.space, full.blocks, {**full.widths, **widths, name: w, **later}).macs
            <= 0.5 * full.macs
        )
        assert fits(widths[name])
        assert widths[name] == full.widths[name] or not fits(widths[name] + 1)
    assert env.macs(widths) <= 0.5 * full.macs
    assert any(widths[n] < full.widths[n] for n in env.layers)  # the clipping did prune
    # min width: at most 80% of the filters pruned
    assert env.min_width["stage1.block0.conv_a"] == 4 and env.width(0, 0.8) == 4


def test_fill_grows_to_a_network_no_single_filter_can_grow(net_and_images):
    model, _ = net_and_images
    env = PruningEnv(model, 0.6)
    widths = fill_budget(env, env.min_width)
    assert env.macs(widths) <= env.budget
    for name in env.layers:
        assert widths[name] == env.channels[name] or (
            env.macs({**widths, name: widths[name] + 1}) > env.budget
        )


def test_search_is_seeded(net_and_images):
    a, keep_a, ep_a = _search(net_and_images, 0.5, episodes=6, seed=3)
    b, keep_b, ep_b = _search(net_and_images, 0.5, episodes=6, seed=3)
    c, _, ep_c = _search(net_and_images, 0.5, episodes=6, seed=4)
    assert a == b and all(torch.equal(keep_a[n], keep_b[n]) for n in keep_a)
    assert [(e.ratios, e.reward) for e in ep_a] == [(e.ratios, e.reward) for e in ep_b]
    assert [e.ratios for e in ep_a] != [e.ratios for e in ep_c]


def test_keep_is_the_l1_largest_filters(net_and_images):
    model, _ = net_and_images
    arch, keep, _ = _search(net_and_images, 0.5, episodes=3)
    convs = named_convs(model, tas.Arch.full(model.space))
    assert set(keep) == set(PruningEnv(model, 0.5).layers)
    for name, idx in keep.items():
        norms = convs[name][0].weight.abs().sum(dim=(1, 2, 3))
        assert idx.tolist() == sorted(idx.tolist()) and len(idx) == arch.widths[name]
        dropped = torch.ones(len(norms), dtype=torch.bool)
        dropped[idx] = False
        assert not dropped.any() or norms[dropped].max() <= norms[idx].min()
    tas.build_model(arch, init_from=model, keep=keep)  # the filters inherit


def test_recalibrated_bn_holds_the_calibration_images_statistics(net_and_images):
    model, images = net_and_images
    x = torch.cat([x for x, _ in images])
    net = recalibrate_bn(tas.build_model(tas.Arch.full(model.space)), images)
    stem_conv, stem_bn = net.stem[0], net.stem[1]
    with torch.no_grad():
        out = stem_conv(x)  # (32, 16, 32, 32); two equal batches: the mean of means is the mean
    torch.testing.assert_close(stem_bn.running_mean, out.mean(dim=(0, 2, 3)))
    assert not net.training and stem_bn.momentum == 0.1
    arch, _, episodes = _search(net_and_images, 0.5, episodes=3, calibration=images[:1])
    assert arch.search["amc"]["bn"] == "recalibrated on 16 images"
    _, _, inherited = _search(net_and_images, 0.5, episodes=3)
    assert [e.ratios for e in episodes] == [e.ratios for e in inherited]  # warm-up: same draws
    assert [e.reward for e in episodes] != [e.reward for e in inherited]


def test_agent_moves_towards_the_better_actions_and_explores_within_bounds():
    agent = DDPGAgent(PruningEnv.FEATURES, seed=0)
    state = torch.rand(PruningEnv.FEATURES, generator=torch.Generator().manual_seed(1))
    actions = [i / 99 for i in range(100)]
    for a in actions:
        agent.remember([state], [a], -a)  # pruning less is better here
    mu = lambda: float(torch.sigmoid(agent.actor(state)).detach())
    before = mu()
    for _ in range(60):
        agent.update()
    assert abs(before - 0.5) < 0.01 and mu() < before - 0.05
    draws = [agent.act(state, 0.5) for _ in range(200)]
    assert min(draws) >= 0.0 and max(draws) <= 1.0 and len(set(draws)) == 200
    assert agent.act(state, 0.0) == pytest.approx(mu(), abs=1e-6)  # no noise: the actor


def test_unreachable_budget_and_bad_settings_are_errors(net_and_images):
    model, images = net_and_images
    with pytest.raises(ValueError, match="smallest network AMC can reach"):
        amc_prune(model, 0.1, images, episodes=2)
    with pytest.raises(ValueError, match="episode"):
        amc_prune(model, 0.5, images, episodes=0)
    with pytest.raises(ValueError, match="held-out"):
        amc_prune(model, 0.5, [], episodes=2)


@pytest.fixture
def teacher_ckpt(tmp_path, net_and_images):
    """The ResNet-8 as a train.py checkpoint (what load_teacher reads)."""
    model, _ = net_and_images
    path = tmp_path / "teacher.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"tas_arch": tas.Arch.full(model.space).to_dict(), "state_dict": state}, path)
    return str(path)


def _check_found(path, episodes: int) -> None:
    data = json.loads(path.read_text())
    assert data["search"]["method"] == "amc" and data["search"]["amc"]["episodes"] == episodes
    assert 0.98 * 0.5 * data["full_macs"] <= data["macs"] <= 0.5 * data["full_macs"]
    assert set(data["search"]["keep"]) == set(data["search"]["amc"]["ratios"])


def test_prune_main_amc_writes_found_json_and_rejects_no_episodes(tmp_path, teacher_ckpt, capsys):
    import prune  # in-process: the command-line run below is the slow one

    common = ["--method=amc", f"--teacher={teacher_ckpt}", "--ratio=0.5", "--data_name=synthetic"]
    out = tmp_path / "amc" / "found.json"
    prune.main([*common, "--images=64", "--episodes=3", "--calibration_images=32", f"--out={out}"])
    assert "amc episode 3/3" in capsys.readouterr().out
    _check_found(out, 3)
    assert json.loads(out.read_text())["search"]["amc"]["bn"] == "recalibrated on 32 images"
    with pytest.raises(SystemExit) as exit_:
        prune.main([*common, "--episodes=0", f"--out={tmp_path / 'bad.json'}"])
    assert exit_.value.code == 2 and "--episodes must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.slow  # two interpreters importing Lightning: ~40 s on two busy cores
def test_prune_py_amc_from_the_command_line(tmp_path, teacher_ckpt):
    out = tmp_path / "amc" / "found.json"
    common = ["--method=amc", f"--teacher={teacher_ckpt}", "--ratio=0.5", "--data_name=synthetic"]
    result = run_script("prune.py", *common, "--images=64", "--episodes=4", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "amc episode 4/4" in result.stdout
    _check_found(out, 4)
    bad = run_script("prune.py", *common, "--episodes=0", f"--out={tmp_path / 'bad.json'}")
    assert_user_error(bad, "--episodes")
    assert not (tmp_path / "bad.json").exists()
