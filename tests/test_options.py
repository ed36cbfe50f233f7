"""ADV²'s settings as objects: perturbations, objectives, trackers, the paper budgets and the flat keywords."""

import inspect

import pytest
import torch

import adv2
from adv2.attacks import ADV2, FLAT_KEYS, Flow, Hide, Linf, LinfSearch
from adv2.attacks.objectives import Fragility as FragilityObjective
from adv2.interpreters import Grad, Mask
from adv2.interpreters.base import Interpreter
from adv2.interpreters.paper import FLOW_DEFAULTS, PAPER_DEFAULTS


@pytest.fixture(scope="module")
def tiny(resnet_model):
    x, y, _ = adv2.data.shapes(2, split="test", seed=3)
    return resnet_model, x, (y + 1) % 10


def _same(a, b):
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.map, b.map)
    if a.flow is not None or b.flow is not None:
        assert torch.equal(a.flow, b.flow)


def test_init_takes_at_most_ten_parameters():
    assert len(inspect.signature(ADV2.__init__).parameters) <= 10


def test_objects_give_the_flat_keywords_results(tiny):
    model, x, t = tiny
    g = Grad(model)
    old = ADV2(model, g, eps=0.05, alpha=2 / 255, alpha_schedule="linear", lam=5.0, lam_adapt=1.02, steps=2,
               warmup=1)(x, t)
    new = ADV2(model, g, Linf(eps=0.05, alpha=2 / 255, schedule="linear"), Hide(lam=5.0, lam_adapt=1.02), steps=2,
               warmup=1)(x, t)
    _same(old, new)
    assert (new.x_adv - x).abs().max() <= 0.05 + 1e-6 and new.x_adv.min() >= 0 and new.x_adv.max() <= 1


def test_flow_object_gives_the_flat_keywords_results(tiny):
    model, x, t = tiny
    g = adv2.interpreters.CAM(model)
    old = ADV2(model, g, perturbation="flow", tau=1e-3, flow_lr=0.02, flow_lr_schedule="cosine", steps=2)(x, t)
    new = ADV2(model, g, Flow(tau=1e-3, lr=0.02, lr_schedule="cosine"), steps=2)(x, t)
    _same(old, new)
    assert new.flow.shape == (2, 2, 64, 64)


def test_mask_tracker_options_and_search(tiny):
    model, x, t = tiny
    g = Mask(model, steps=5)
    old = ADV2(model, g, n_step=1, n_reset=2, n_seeds=2, alpha_max=0.1, n_bs=3, steps=2, warmup=1)
    new = ADV2(model, g.tracker(n_step=1, n_reset=2, n_seeds=2), LinfSearch(max_length=0.1, halvings=3), steps=2,
               warmup=1)
    assert isinstance(old.perturbation, LinfSearch) and old.perturbation == new.perturbation
    assert (old.n_seeds, old.n_step, old.alpha_max, old.step_rule) == (2, 1, 0.1, "search")
    _same(old(x, t), new(x, t))
    # a tracker is reset between calls: the same call twice gives the same result
    _same(new(x, t), new(x, t))
    assert "n_seeds=2" in repr(new) and "LinfSearch(" in repr(new)


def test_paper_budgets_belong_to_the_interpreter(resnet_model):
    g = Grad(resnet_model)
    assert g.paper_budget("linf") == PAPER_DEFAULTS["grad"] and g.paper_budget("flow") == FLOW_DEFAULTS["grad"]
    atk = ADV2.paper(resnet_model, g, perturbation="flow")
    assert (atk.steps, atk.warmup, atk.lam, atk.tau) == (800, 0, FLOW_DEFAULTS["grad"]["lam"], 5e-4)
    # MASK: the library's default is the robust, affordable scheme; the paper's is one call away
    atk = ADV2(resnet_model, Mask(resnet_model))
    assert isinstance(atk.perturbation, LinfSearch)
    assert (atk.warmup, atk.steps, atk.n_step, atk.n_reset, atk.n_seeds, atk.alpha_max) == (50, 100, 2, 25, 2, 0.3)
    paper = ADV2.paper(resnet_model, Mask(resnet_model))
    assert (paper.warmup, paper.steps, paper.n_step, paper.n_reset, paper.n_seeds, paper.alpha_max) == (
        300, 1000, 4, 50, 1, 0.08)
    assert ADV2.paper(resnet_model, Mask(resnet_model), steps=10, n_seeds=3).n_seeds == 3
    flow = ADV2.paper(resnet_model, Mask(resnet_model), perturbation="flow")
    assert (flow.warmup, flow.steps, flow.n_seeds) == (0, 1000, 1)
    assert (ADV2(resnet_model, Mask(resnet_model), perturbation="flow").steps, Mask(resnet_model).attack_budget(
        "flow")["warmup"]) == (100, 50)
    with pytest.raises(ValueError, match="n_step given to ADV2 with a tracker"):
        ADV2.paper(resnet_model, Mask(resnet_model).tracker(), n_step=3)


class _Custom(Interpreter):
    name = "custom"

    def __init__(self, model):
        super().__init__(model)
        self.inner = Grad(model)

    def logits_and_map(self, x, target, create_graph=False, smooth=False):
        return self.inner.logits_and_map(x, target, create_graph, smooth)


def test_unknown_interpreter_needs_explicit_budget(tiny):
    model, x, t = tiny
    g = _Custom(model)
    with pytest.raises(ValueError, match="no attack budget for interpreter 'custom'"):
        ADV2(model, g)
    g.defaults_like = "grad"  # or name a family
    assert ADV2(model, g).lam == PAPER_DEFAULTS["grad"]["lam"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(perturbation=Linf(), eps=0.1), r"Linf\(eps=\.\.\.\)"),
    (dict(objective=Hide(), lam=3.0), r"Hide\(lam=\.\.\.\)"),
    (dict(n_step=2), "takes no attack options"),
    (dict(perturbation="flow", alpha=0.01), "alpha applies to perturbation='linf'"),
    (dict(tau=1e-3), "tau applies to perturbation='flow'"),
    (dict(alpha_max=0.1), "alpha_max applies to step_rule='search'"),
    (dict(measure="l1"), "measure applies to objective='fragility'"),
    (dict(perturbation="box"), "unknown perturbation 'box'"),
    (dict(objective="hide"), "unknown objective 'hide'"),
    (dict(step_rule="adam"), "unknown step_rule 'adam'"),
    (dict(objective="fragility", warmup=5), "takes no warmup"),
    (dict(steps=-1), "steps must be a non-negative integer"),
])
def test_bad_settings_name_the_new_spelling(resnet_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADV2(resnet_model, Grad(resnet_model), **kwargs)


def test_unknown_keyword_and_tracker_conflict(resnet_model):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        ADV2(resnet_model, Grad(resnet_model), n_iter=3)
    g = Mask(resnet_model, steps=5)
    with pytest.raises(ValueError, match=r"tracker\(n_step=\.\.\.\)"):
        ADV2(resnet_model, g.tracker(n_step=2), n_step=3)
    with pytest.raises(ValueError, match="n_reset must be an integer"):
        g.tracker(n_reset=0)
    with pytest.raises(ValueError, match="cannot serve objective='fragility'"):
        ADV2(resnet_model, g, objective="fragility", mask_loss="objective")


@pytest.mark.parametrize("make, match", [
    (lambda: Linf(eps=2.0), "eps"),
    (lambda: Linf(schedule="step"), "unknown alpha schedule"),
    (lambda: LinfSearch(halvings=-1), "halvings"),
    (lambda: Flow(tau=-1.0), "tau must be a non-negative number"),
    (lambda: Flow(lr=0), "lr"),
    (lambda: Flow(betas=(0.9,)), "betas"),
    (lambda: Hide(lam_adapt=3), "lam_adapt"),
    (lambda: Hide(lam=-1), "lam must be"),
    (lambda: FragilityObjective(measure="area"), "unknown measure"),
    (lambda: FragilityObjective(k=0), "k must be"),
])
def test_objects_validate(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_repr_shows_every_setting(resnet_model):
    atk = ADV2(resnet_model, Grad(resnet_model), Linf(eps=0.02, schedule="constant"),
               FragilityObjective(measure="l1", lam=2.0), steps=7)
    r = repr(atk)
    for part in ("Linf(eps=0.02", "schedule='constant'", "Fragility(measure='l1'", "lam=2", "lam_schedule='linear'",
                 "steps=7", "warmup=0"):
        assert part in r, (part, r)
    assert set(atk.settings()) == {"perturbation", "objective", "tracker", "steps", "warmup"}


def test_flat_keys_cover_every_old_keyword():
    old = {"eps", "alpha", "lam", "lam_schedule", "alpha_schedule", "step_rule", "alpha_max", "n_bs", "n_step",
           "n_reset", "n_seeds", "mask_loss", "lam_enc", "tau", "flow_lr", "flow_lr_schedule", "betas", "lam_adapt",
           "measure", "k"}
    new = {"unroll_draws", "unroll_seeds", "rotate_seeds", "game_term"}  # MASK's tracker options, new
    assert old | new == set(FLAT_KEYS)


def test_surrogate_temperature_old_spelling_warns(resnet_model):
    from adv2.interpreters import smooth_relu

    with pytest.warns(DeprecationWarning, match="temperature"):
        g = Grad(resnet_model, tau=1e-3)
    assert g.temperature == 1e-3 and "temperature=0.001" in repr(g)
    with pytest.warns(DeprecationWarning, match="temperature"):
        mode = smooth_relu(tau=1e-2)
    assert mode.temperature == 1e-2
    with pytest.raises(ValueError, match="temperature and beta must be positive"):
        smooth_relu(temperature=0)
