"""Loss surfaces, the library side: direction normalization, the sharpness summary on explicit arrays,
the grid's point order, and batched against plain evaluation of grid points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape_cli.checkpoint import load_checkpoint
from landscape_cli.errors import LandscapeError
from landscape_cli.session import problem_from_checkpoint
from landscape_cli.surface import Axis, Grid, normalize, summarize
from landscape_cli.surface.directions import random_directions
from landscape_cli.surface.evaluate import PointEvaluator

from .conftest import SAMPLE_DIR


def resnet_problem(**kw):
    return problem_from_checkpoint(load_checkpoint(SAMPLE_DIR / "resnet_digits.pt"), samples=64, device="cpu", **kw)


@pytest.fixture(scope="module")
def resnet():
    """The BatchNorm ResNet sample: 4-D conv weights, a 2-D Linear weight, 1-D biases and BatchNorm."""
    problem = resnet_problem()
    kinds = {p.dim() for p in problem.layout.unflatten(problem.w).values()}
    assert kinds == {1, 2, 4}
    return problem


def rel(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return (a - b).abs() / b.abs().clamp_min(1e-30)


# -- normalization ------------------------------------------------------------------------------


def test_normalize_on_explicit_tensors():
    weights = {
        "lin.weight": torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64),  # row norms 5, 2
        "lin.bias": torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64),  # norm 3
    }

    def direction():
        return {
            "lin.weight": torch.tensor([[1.0, 0.0], [0.0, -4.0]], dtype=torch.float64),
            "lin.bias": torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64),
        }

    out = normalize(direction(), weights, "filter", "biasbn")
    torch.testing.assert_close(out["lin.weight"], torch.tensor([[5.0, 0.0], [0.0, -2.0]], dtype=torch.float64))
    assert torch.equal(out["lin.bias"], torch.zeros(3, dtype=torch.float64))
    out = normalize(direction(), weights, "filter", "none")
    torch.testing.assert_close(out["lin.bias"], torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))
    # layer: the whole tensor gets the weight tensor's norm sqrt(29), the direction's shape kept
    out = normalize(direction(), weights, "layer", "none")
    expected = torch.tensor([[1.0, 0.0], [0.0, -4.0]], dtype=torch.float64) * (29**0.5 / 17**0.5)
    torch.testing.assert_close(out["lin.weight"], expected)
    # none leaves the weights alone; biasbn still zeroes the vectors
    out = normalize(direction(), weights, "none", "biasbn")
    assert torch.equal(out["lin.weight"], direction()["lin.weight"])
    assert not out["lin.bias"].any()
    # a conv weight (2 output channels, 1 input channel, 2x2 kernels): each output channel is one filter,
    # rescaled as a whole, so the direction inside a filter keeps its shape
    conv_w = torch.tensor([[[[1.0, 2.0], [2.0, 4.0]]], [[[0.0, 3.0], [4.0, 0.0]]]], dtype=torch.float64)  # 5, 5
    conv_d = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[3.0, 0.0], [0.0, -4.0]]]], dtype=torch.float64)  # 1, 5
    out = normalize({"conv.weight": conv_d.clone()}, {"conv.weight": conv_w}, "filter", "biasbn")
    torch.testing.assert_close(out["conv.weight"], conv_d * torch.tensor([5.0, 1.0]).view(2, 1, 1, 1).double())
    with pytest.raises(LandscapeError, match="unknown norm"):
        normalize(direction(), weights, "unit", "none")
    with pytest.raises(LandscapeError, match="unknown ignore"):
        normalize(direction(), weights, "filter", "bn")


def test_filter_normalized_random_direction_matches_every_filter(resnet):
    weights = resnet.layout.unflatten(resnet.w)
    (d,) = random_directions(resnet, 1, seed=3, norm="filter", ignore="biasbn")
    assert d.vector.dtype == resnet.dtype and d.vector.shape == resnet.w.shape
    parts = resnet.layout.unflatten(d.vector)
    # the draw the direction is made of: float64 Gaussians on the CPU from the seed (documented)
    raw = resnet.layout.unflatten(torch.randn(resnet.n_params, generator=torch.Generator().manual_seed(3),
                                              dtype=torch.float64))  # fmt: skip
    filters = 0
    for name, w in weights.items():
        if w.dim() > 1:  # conv (out, in, k, k) and Linear (out, in): one filter per output channel/row
            got = parts[name].reshape(w.shape[0], -1).norm(dim=1)
            want = w.reshape(w.shape[0], -1).norm(dim=1)
            assert float(rel(got, want).max()) < 1e-5, name
            # rescaled filter by filter, nothing else: each filter is parallel to the seed's Gaussian draw
            raw_rows, d_rows = raw[name].reshape(w.shape[0], -1), parts[name].double().reshape(w.shape[0], -1)
            cosine = (raw_rows * d_rows).sum(1) / (raw_rows.norm(dim=1) * d_rows.norm(dim=1))
            assert float(cosine.min()) > 1 - 1e-6, name
            filters += w.shape[0]
        else:  # biases and BatchNorm weights and biases stay at the checkpoint
            assert torch.equal(parts[name], torch.zeros_like(w)), name
    assert filters > 40
    assert d.attrs == {"kind": "random", "norm": "filter", "ignore": "biasbn", "seed": 3, "index": 0}


def test_ignore_none_gives_each_vector_its_weights_norm(resnet):
    weights = resnet.layout.unflatten(resnet.w)
    (d,) = random_directions(resnet, 1, seed=3, norm="filter", ignore="none")
    parts = resnet.layout.unflatten(d.vector)
    vectors = [name for name, w in weights.items() if w.dim() == 1]
    assert any("bn" in name for name in vectors) and any(name.endswith("bias") for name in vectors)
    for name in vectors:
        assert float(rel(parts[name].norm(), weights[name].norm())) < 1e-5, name
    # the multi-dim tensors are the same as under biasbn: one draw, the vectors merely kept
    (same,) = random_directions(resnet, 1, seed=3, norm="filter", ignore="biasbn")
    for name, w in weights.items():
        if w.dim() > 1:
            assert torch.equal(parts[name], resnet.layout.unflatten(same.vector)[name])


def test_layer_normalization_gives_each_tensor_its_weights_norm(resnet):
    weights = resnet.layout.unflatten(resnet.w)
    for ignore in ("biasbn", "none"):
        (d,) = random_directions(resnet, 1, seed=5, norm="layer", ignore=ignore)
        parts = resnet.layout.unflatten(d.vector)
        for name, w in weights.items():
            if w.dim() == 1 and ignore == "biasbn":
                assert not parts[name].any()
            else:
                assert float(rel(parts[name].norm(), w.norm())) < 1e-5, (name, ignore)
        # layer normalization rescales whole tensors: the filters' norms are not all equal to the weight's
        conv = next(name for name, w in weights.items() if w.dim() == 4)
        ratio = parts[conv].flatten(1).norm(dim=1) / weights[conv].flatten(1).norm(dim=1)
        assert float(ratio.max() / ratio.min()) > 1.05


def test_random_directions_depend_on_the_seed_only(resnet):
    a1, a2 = random_directions(resnet, 2, seed=7, norm="filter", ignore="biasbn")
    b1, b2 = random_directions(resnet, 2, seed=7, norm="filter", ignore="biasbn")
    (c1,) = random_directions(resnet, 1, seed=8, norm="filter", ignore="biasbn")
    assert torch.equal(a1.vector, b1.vector) and torch.equal(a2.vector, b2.vector)
    cosine = lambda u, v: float(u.double() @ v.double() / (u.double().norm() * v.double().norm()))  # noqa: E731
    # independent Gaussian directions in ~20k dimensions are nearly orthogonal
    assert abs(cosine(a1.vector, c1.vector)) < 0.1
    assert abs(cosine(a1.vector, a2.vector)) < 0.1
    assert (a1.vector - c1.vector).norm() > 0.5 * a1.vector.norm()


def test_random_direction_is_the_same_in_float64(resnet):
    """Drawn on the CPU in float64 from the seed: the float32 problem gets the float64 draw, rounded."""
    double = resnet_problem(dtype="float64")
    (d32,) = random_directions(resnet, 1, seed=2, norm="none", ignore="none")
    (d64,) = random_directions(double, 1, seed=2, norm="none", ignore="none")
    assert d64.vector.dtype == torch.float64
    assert torch.equal(d32.vector, d64.vector.float())


# -- the grid ---------------------------------------------------------------------------------


def test_grid_points_run_along_x_within_a_row():
    grid = Grid(Axis(-1.0, 1.0, 5), Axis(0.0, 1.0, 3))
    assert grid.shape == (3, 5) and grid.size == 15 and grid.dims == 2
    coeffs = grid.coefficients(np.arange(15))
    gx, gy = np.meshgrid(grid.x.coordinates, grid.y.coordinates)
    np.testing.assert_array_equal(coeffs[:, 0].reshape(3, 5), gx)
    np.testing.assert_array_equal(coeffs[:, 1].reshape(3, 5), gy)
    line = Grid(Axis(-2.0, 2.0, 9))
    assert line.shape == (9,)
    np.testing.assert_array_equal(line.coefficients(np.array([0, 4, 8]))[:, 0], [-2.0, 0.0, 2.0])
    assert Axis.parse("-0.5:1.5:41", "--x") == Axis(-0.5, 1.5, 41)
    assert Axis.parse("-0.5:1.5:41", "--x").spec() == "-0.5:1.5:41"


# -- the summary on explicit arrays --------------------------------------------------------------

HXX, HXY, HYY, GX, GY, L0 = 3.0, -0.8, 1.25, 0.4, -0.7, 2.5


def quadratic(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    return L0 + GX * gx + GY * gy + 0.5 * (HXX * gx**2 + 2 * HXY * gx * gy + HYY * gy**2)


@pytest.fixture
def plane():
    """A non-square grid (21 x-points, 15 y-points, different spans) of an exact quadratic."""
    x = np.linspace(-1.0, 1.0, 21)
    y = np.linspace(-0.6, 0.8, 15)
    gx, gy = np.meshgrid(x, y)
    return x, y, quadratic(gx, gy)


def test_summary_of_an_exact_quadratic_plane(plane):
    x, y, loss = plane
    assert loss.shape == (15, 21)
    s = summarize(x, y, loss, L0, radius=0.3)
    np.testing.assert_allclose(s["fit_hessian"], [[HXX, HXY], [HXY, HYY]], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s["curvature"], [HXX, HYY], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s["fit_hessian_eigenvalues"], np.linalg.eigvalsh([[HXX, HXY], [HXY, HYY]]), atol=1e-9)
    assert s["center_loss"] == L0 and s["radius"] == 0.3
    # The mean over a circle of a quadratic is L0 + r^2 (Hxx + Hyy) / 4 (linear and cross terms cancel);
    # bilinear interpolation is exact for the linear and xy terms and off by at most h^2/8 * |H| for the squares.
    slack = (HXX * 0.1**2 + HYY * 0.1**2) / 8
    assert s["rise_mean"] == pytest.approx(0.25 * 0.3**2 * (HXX + HYY), abs=slack)
    angles = np.linspace(0, 2 * np.pi, 10_000)
    true_max = float(quadratic(0.3 * np.cos(angles), 0.3 * np.sin(angles)).max()) - L0
    assert s["rise_max"] == pytest.approx(true_max, abs=slack + 1e-3)
    assert s["fit_halfwidth"] == pytest.approx([0.25, 0.25])


def test_summary_is_not_transposed(plane):
    """Swapping the roles of x and y must swap the curvatures: the arrays are (len(y), len(x))."""
    x, y, loss = plane
    s = summarize(y, x, loss.T, L0, radius=0.3)
    np.testing.assert_allclose(s["curvature"], [HYY, HXX], atol=1e-9)


def test_summary_survives_nan_points_away_from_the_centre(plane):
    x, y, loss = plane
    clean = summarize(x, y, loss, L0, radius=0.3)
    loss = loss.copy()
    loss[0, 0] = np.nan  # a corner
    loss[7, 12] = np.nan  # (x=0.2, y=0.1): inside the fit window
    loss[9, 13] = np.nan  # (x=0.3, y=0.3): next to the circle of radius 0.3
    s = summarize(x, y, loss, L0, radius=0.3)
    np.testing.assert_allclose(s["fit_hessian"], [[HXX, HXY], [HXY, HYY]], atol=1e-9)
    assert np.isfinite([s["rise_mean"], s["rise_max"]]).all()
    assert s["rise_mean"] == pytest.approx(clean["rise_mean"], rel=0.1)
    assert s["rise_max"] <= clean["rise_max"] + 1e-12


def test_summary_of_an_exact_quadratic_line():
    x = np.linspace(-1.0, 1.0, 21)
    loss = L0 + GX * x + 0.5 * HXX * x**2
    s = summarize(x, None, loss, L0, radius=0.5)  # 0.5 is a grid point
    assert s["curvature"] == pytest.approx([HXX], rel=1e-9)
    assert s["rise_mean"] == pytest.approx(0.5 * HXX * 0.25, rel=1e-9)  # the linear term cancels
    assert s["rise_max"] == pytest.approx(0.5 * HXX * 0.25 + abs(GX) * 0.5, rel=1e-9)
    assert "fit_hessian" not in s
    # between the grid points 0.4 and 0.5 (and -0.5, -0.4), linear interpolation of x^2 is off by
    # exactly (r - 0.4)(0.5 - r)
    s = summarize(x, None, loss, L0, radius=0.43)
    assert s["rise_mean"] == pytest.approx(0.5 * HXX * (0.43**2 + (0.43 - 0.4) * (0.5 - 0.43)), rel=1e-9)
    loss[12] = np.nan  # x = 0.2, inside the fit window (halfwidth 0.25)
    loss[0] = np.nan
    s = summarize(x, None, loss, L0, radius=0.5)
    assert s["curvature"] == pytest.approx([HXX], rel=1e-9)
    assert s["rise_mean"] == pytest.approx(0.5 * HXX * 0.25, rel=1e-9)


def test_summary_without_the_centre_inside():
    x = np.linspace(0.0, 1.0, 5)
    s = summarize(x, None, x**2, 0.0, radius=None)
    assert s == {"center_loss": 0.0}
    with pytest.raises(ValueError):
        summarize(x, None, x**2, 0.0, radius=-1.0)


# -- batched against plain evaluation ------------------------------------------------------------

COEFFS = np.array([[0.0, 0.0], [0.5, -0.3], [-1.0, 1.0], [0.2, 0.9], [1.0, 1.0], [-0.7, -0.1]])


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("sample", ["mlp_digits", "cnn_digits", "resnet_digits"])
def test_batched_evaluation_matches_the_plain_loop(sample, train_mode, loss):
    ckpt = load_checkpoint(SAMPLE_DIR / f"{sample}.pt", loss=loss)
    # 64 samples in chunks of 25, 25, 14: train-mode BatchNorm takes each chunk's statistics
    problem = problem_from_checkpoint(ckpt, samples=64, batch_size=25, device="cpu", train_mode=train_mode)
    directions = random_directions(problem, 2, seed=1, norm="filter", ignore="none")
    evaluator = PointEvaluator(problem, directions)
    assert evaluator.batched_ok
    loop = evaluator.evaluate_loop(COEFFS)
    batched = evaluator.evaluate_batched(COEFFS)
    assert loop.shape == batched.shape == (len(COEFFS), 2)
    np.testing.assert_allclose(batched[:, 0], loop[:, 0], rtol=1e-5)
    # accuracy in %, a count of 64 samples: the same argmax in both
    np.testing.assert_allclose(batched[:, 1], loop[:, 1], atol=100 / 64 + 1e-9)
    assert ((loop[:, 1] >= 0) & (loop[:, 1] <= 100)).all()
    # and the loop is the Problem's own loss at w + x d1 + y d2
    d1, d2 = directions[0].vector, directions[1].vector
    for (x, y), row in zip(COEFFS[:3], loop[:3], strict=True):
        truth = problem.evaluate(w=problem.w + float(x) * d1 + float(y) * d2)
        assert row[0] == pytest.approx(truth["loss"], rel=1e-5)
        assert row[1] == pytest.approx(truth["accuracy"], abs=100 / 64 + 1e-9)
    # the points differ: a broadcasting slip that evaluated one point P times would not
    assert np.ptp(loop[:, 0]) > 0.1 * loop[:, 0].max()


# -- the library entry point ----------------------------------------------------------------------


def test_compute_surface_keeps_an_existing_output_without_overwrite(tmp_path):
    from landscape_cli.surface import SurfaceOptions, compute_surface

    ckpt = load_checkpoint(SAMPLE_DIR / "mlp_digits.pt")
    problem = problem_from_checkpoint(ckpt, samples=50, device="cpu")
    out = tmp_path / "taken.h5"
    out.write_bytes(b"somebody else's file")
    with pytest.raises(LandscapeError, match="exists"):
        compute_surface(ckpt, {"train": problem}, SurfaceOptions(x="-1:1:3"), out, overwrite=False)
    assert out.read_bytes() == b"somebody else's file"
    assert {p.name for p in tmp_path.iterdir()} == {"taken.h5"}
    compute_surface(ckpt, {"train": problem}, SurfaceOptions(x="-1:1:3"), out, overwrite=True)
    assert out.read_bytes()[:4] == b"\x89HDF"


def test_compute_surface_returns_what_it_wrote(tmp_path):
    import h5py

    from landscape_cli.surface import SurfaceOptions, compute_surface

    ckpt = load_checkpoint(SAMPLE_DIR / "mlp_digits.pt")
    problem = problem_from_checkpoint(ckpt, samples=50, device="cpu")
    options = SurfaceOptions(dims=2, x="-1:1:3", y="-0.5:0.5:5", seed=4, points_per_pass=1)
    result = compute_surface(ckpt, {"train": problem}, options, tmp_path / "s.h5")
    assert result.grid.shape == (5, 3) and result.arrays["train_loss"].shape == (5, 3)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        np.testing.assert_array_equal(f["train_loss"][()], result.arrays["train_loss"])
        np.testing.assert_array_equal(f["train_acc"][()], result.arrays["train_acc"])
    assert result.summary["center_loss"] == pytest.approx(problem.evaluate()["loss"], rel=1e-6)
    assert result.arrays["train_loss"][2, 1] == pytest.approx(problem.evaluate()["loss"], rel=1e-6)
    assert result.stats.computed == 15 and result.nonfinite == 0


# -- the cached first layer ---------------------------------------------------------------------------
class _Scaled(torch.nn.Module):
    """A first layer that does not read the data itself (the input is doubled first): never cached."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(2 * x)


def _live_problem(model: torch.nn.Module, batch_size: int = 70):
    from landscape_cli.problem import Problem
    from landscape_cli.zoo.data import Dataset

    generator = torch.Generator().manual_seed(0)
    data = Dataset(torch.randn(200, 64, generator=generator), torch.randint(0, 10, (200,), generator=generator))
    return Problem(model, data, "cross_entropy", batch_size=batch_size, dtype=torch.float64)


@pytest.mark.parametrize(
    "model, cached",
    [
        (torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(inplace=True), torch.nn.Linear(16, 10)), True),
        (_Scaled(), False),
    ],
)
def test_first_layer_cache_matches_the_plain_forward(model, cached: bool) -> None:
    """The cache is used only where the first layer reads the data; where it is, every point of a sweep
    (several chunks, an in-place ReLU after it that must not corrupt the cache) equals the plain forward."""
    torch.manual_seed(1)
    problem = _live_problem(model)
    directions = random_directions(problem, 2, 0, "filter", "none")
    coefficients = np.array([[0.0, 0.0], [0.7, -0.2], [-1.0, 1.0], [0.7, -0.2], [0.0, 0.0]])
    fast = PointEvaluator(problem, directions)
    plain = PointEvaluator(problem, directions, cache_first_layer=False)
    got, want = fast.evaluate_loop(coefficients), plain.evaluate_loop(coefficients)
    assert (fast.first_layer is not None) == cached
    assert plain.first_layer is None
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(got[0], got[4])  # the cache came back unchanged after the in-place ReLU
    batched = fast.evaluate_batched(coefficients)  # vmap serves each point its cached combination
    assert (fast._batched_model()[1] is not None) == cached
    np.testing.assert_allclose(batched, want, rtol=1e-10)
    assert got[0, 0] == pytest.approx(problem.evaluate()["loss"], rel=1e-12)


def test_first_layer_cache_on_the_samples() -> None:
    """Linear (MLP) and Conv2d (CNN, ResNet stem) first layers are cached and agree with the plain loop."""
    for name, kind in (("mlp_digits", "Linear"), ("cnn_digits", "Conv2d"), ("resnet_digits", "Conv2d")):
        problem = problem_from_checkpoint(load_checkpoint(SAMPLE_DIR / f"{name}.pt"), device="cpu", samples=150)
        directions = random_directions(problem, 2, 0, "filter", "biasbn")
        coefficients = np.array([[0.3, -0.8], [1.0, 0.5]])
        fast = PointEvaluator(problem, directions)
        values = fast.evaluate_loop(coefficients)
        assert type(fast.first_layer.module).__name__ == kind
        plain = PointEvaluator(problem, directions, cache_first_layer=False).evaluate_loop(coefficients)
        np.testing.assert_allclose(values[:, 0], plain[:, 0], rtol=1e-5)
