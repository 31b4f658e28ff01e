"""Built-in datasets and models, user data files and entry points."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from landscape_cli.errors import LandscapeError
from landscape_cli.zoo.data import _split_indices, data_spec, describe_data, load_data
from landscape_cli.zoo.entrypoints import is_entrypoint, resolve_entrypoint
from landscape_cli.zoo.models import MLP, SmallCNN, SmallResNet, build_model, model_spec

from .conftest import MLP_PARAMS


def data(name: str, split: str = "train", seed: int = 0, **kwargs):
    return load_data(data_spec(name, split, seed, kwargs))


@pytest.fixture(scope="module")
def digits():
    return {split: data("digits", split) for split in ("train", "test", "all")}


# -- digits ---------------------------------------------------------------------------------------


def test_digits_split_sizes(digits):
    assert digits["train"].x.shape == (1438, 64)
    assert digits["test"].x.shape == (359, 64)
    assert digits["all"].x.shape == (1797, 64)
    assert digits["train"].x.dtype == torch.float32 and digits["train"].y.dtype == torch.long
    assert digits["train"].task == "classification" and digits["train"].num_classes == 10
    train, test = _split_indices(1797, "train"), _split_indices(1797, "test")
    assert not set(train) & set(test) and sorted([*train, *test]) == list(range(1797))


def test_digits_standardized_with_training_statistics(digits):
    from sklearn.datasets import load_digits

    x = digits["train"].x.double()
    raw_std = load_digits().data[_split_indices(1797, "train")].std(axis=0)
    varying = torch.from_numpy(raw_std > 0)
    assert 0 < int((~varying).sum()) < 64  # some pixels are always blank in the training images
    assert x.mean(dim=0).abs().max() < 1e-5
    np.testing.assert_allclose(x[:, varying].std(dim=0, unbiased=False).numpy(), 1.0, atol=1e-5)
    assert (x[:, ~varying] == 0).all()  # constant columns are centred, not divided by zero
    # The test split is scaled with the training statistics, so its own mean is not exactly 0.
    assert digits["test"].x.double().mean(dim=0).abs().max() > 1e-3


def test_digits_split_does_not_depend_on_the_seed(digits):
    other = data("digits", "train", seed=123)
    assert torch.equal(other.x, digits["train"].x) and torch.equal(other.y, digits["train"].y)


def test_limit_keeps_the_first_samples(digits):
    limited = data("digits", limit=100)
    assert len(limited) == 100
    assert torch.equal(limited.x, digits["train"].x[:100]) and torch.equal(limited.y, digits["train"].y[:100])


@pytest.mark.parametrize("limit", [0, -5, "many", 2.5, True])
def test_bad_limit(limit):
    with pytest.raises(LandscapeError, match="limit must be a positive integer"):
        data("digits", limit=limit)


def test_unknown_dataset_argument():
    with pytest.raises(LandscapeError, match="dataset 'digits'.*colour"):
        data("digits", colour="red")


# -- synthetic sets -----------------------------------------------------------------------------


def test_gaussian_mixture():
    train = data("gaussian-mixture", n=500, dim=5, classes=3, seed=1)
    test = data("gaussian-mixture", "test", n=500, dim=5, classes=3, seed=1)
    assert train.x.shape == (400, 5) and test.x.shape == (100, 5)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.long
    assert set(train.y.tolist()) == {0, 1, 2}
    assert train.x.double().mean(dim=0).abs().max() < 1e-5  # standardized
    assert len(data("gaussian-mixture")) == 1600  # default n=2000, 80% for training


@pytest.mark.parametrize("name", ["gaussian-mixture", "spirals", "teacher-student"])
def test_synthetic_sets_are_determined_by_the_seed(name):
    a, b, c = data(name, seed=4), data(name, seed=4), data(name, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_spirals():
    d = data("spirals", n=200, seed=0)
    assert d.x.shape == (160, 2) and d.x.dtype == torch.float32
    assert d.y.dtype == torch.long and set(d.y.tolist()) == {0, 1}
    radius = d.x.norm(dim=1)
    assert radius.max() < 3.0 + 5 * 0.2  # radius grows to 3, noise 0.2


def test_teacher_student():
    d = data("teacher-student", n=100, dim=6, outputs=3)
    assert d.x.shape == (80, 6) and d.y.shape == (80, 3)
    assert d.y.dtype == torch.float32 and d.task == "regression" and d.num_classes is None
    one = data("teacher-student", n=100)
    assert one.y.shape == (80, 1)  # regression targets are columns
    noiseless = data("teacher-student", n=50, split="all", noise=0.0)
    assert noiseless.y.abs().max() < 3  # tanh features through a 1/sqrt(hidden) readout


def test_splits_and_specs():
    assert data_spec("digits") == {
        "split": "train",
        "seed": 0,
        "kwargs": {},
        "name": "digits",
        "preprocessing": "standardize (train-split statistics)",
    }
    assert data_spec("my.npz")["path"] == "my.npz"
    assert data_spec("pkg.mod:load")["entrypoint"] == "pkg.mod:load"
    assert describe_data(data_spec("spirals", "test", kwargs={"n": 10})) == "spirals[test,n=10]"
    with pytest.raises(LandscapeError, match="unknown split 'valid'"):
        data_spec("digits", "valid")
    with pytest.raises(LandscapeError, match="unknown dataset 'cifar10'"):
        data_spec("cifar10")
    with pytest.raises(LandscapeError, match="neither"):
        load_data({"split": "train"})


# -- user files and entry points -----------------------------------------------------------------


def test_npz_file_with_named_splits(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.normal(size=(30, 4)),
        y_train=rng.integers(0, 3, 30),
        x_test=rng.normal(size=(10, 4)),
        y_test=rng.integers(0, 3, 10),
    )
    train = load_data(data_spec(str(tmp_path / "d.npz")))
    test = load_data(data_spec(str(tmp_path / "d.npz"), "test"))
    assert len(train) == 30 and len(test) == 10 and train.x.dtype == torch.float32
    with pytest.raises(LandscapeError, match="no arrays 'x'/'y' for split 'all'.*x_train"):
        load_data(data_spec(str(tmp_path / "d.npz"), "all"))


def test_npz_file_problems(tmp_path):
    np.savez(tmp_path / "rows.npz", x=np.zeros((5, 2)), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(LandscapeError, match="x has 5 rows but y has 4"):
        load_data(data_spec(str(tmp_path / "rows.npz")))
    np.savez(tmp_path / "reg.npz", x=np.zeros((5, 2)), y=np.linspace(0, 1, 5))
    assert load_data(data_spec(str(tmp_path / "reg.npz"))).y.shape == (5, 1)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(LandscapeError, match="cannot read data file"):
        load_data(data_spec(str(tmp_path / "junk.npz")))
    with pytest.raises(LandscapeError, match="data file not found"):
        load_data(data_spec(str(tmp_path / "absent.npz")))


def test_pt_data_file(tmp_path):
    torch.save({"x": torch.randn(6, 3), "y": torch.arange(6) % 2}, tmp_path / "d.pt")
    d = load_data(data_spec(str(tmp_path / "d.pt")))
    assert d.x.shape == (6, 3) and d.y.tolist() == [0, 1, 0, 1, 0, 1]


ENTRY_MODULE = """
import torch

def as_tuple(n=10, split="train"):
    return torch.randn(n if split == "train" else 2, 3), torch.zeros(n if split == "train" else 2, dtype=torch.long)

def as_dict():
    return {"x": [[1.0, 2.0]], "y": [1]}

class Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.full((2,), float(i)), i % 2

def as_dataset():
    return Pairs()

def wrong():
    return 42

def broken():
    raise ValueError("no data today")
"""


@pytest.fixture
def entry_module(tmp_path, monkeypatch):
    name = "landscape_test_entry_module"
    (tmp_path / f"{name}.py").write_text(ENTRY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_data_entry_points(entry_module):
    assert len(load_data(data_spec(f"{entry_module}:as_tuple", kwargs={"n": 7}))) == 7
    assert len(load_data(data_spec(f"{entry_module}:as_tuple", "test"))) == 2  # the function is told the split
    d = load_data(data_spec(f"{entry_module}:as_dict"))
    assert d.x.tolist() == [[1.0, 2.0]] and d.y.tolist() == [1]
    ds = load_data(data_spec(f"{entry_module}:as_dataset"))
    assert ds.x[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and ds.y.tolist() == [0, 1, 0, 1]
    with pytest.raises(LandscapeError, match="returned int; expected"):
        load_data(data_spec(f"{entry_module}:wrong"))
    with pytest.raises(LandscapeError, match="failed: ValueError: no data today"):
        load_data(data_spec(f"{entry_module}:broken"))


def test_resolve_entrypoint(tmp_path):
    assert resolve_entrypoint("os.path:join") is os.path.join
    assert is_entrypoint("a.b:c") and is_entrypoint("dir/file.py:make")
    assert not is_entrypoint("mlp") and not is_entrypoint(":x") and not is_entrypoint("a:1x")
    with pytest.raises(LandscapeError, match="not an entry point"):
        resolve_entrypoint("mlp")
    with pytest.raises(LandscapeError, match="module 'os.path' has no attribute 'nothing'"):
        resolve_entrypoint("os.path:nothing")
    with pytest.raises(LandscapeError, match="entry point file not found"):
        resolve_entrypoint(f"{tmp_path}/absent.py:f")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    with pytest.raises(LandscapeError, match="cannot import .*syntax.py.*SyntaxError"):
        resolve_entrypoint(f"{tmp_path}/syntax.py:f")
    (tmp_path / "ok.py").write_text("VALUE = 3\n")
    assert resolve_entrypoint(f"{tmp_path}/ok.py:VALUE") == 3


# -- models ---------------------------------------------------------------------------------------


def test_builtin_models_on_digits(digits):
    x = digits["train"].x[:5]
    for spec, n_params in [
        ({"name": "mlp", "kwargs": {"widths": [64, 32, 10], "activation": "tanh"}}, MLP_PARAMS),
        ({"name": "cnn", "kwargs": {"channels": [8, 16]}}, 1898),
        ({"name": "resnet", "kwargs": {"width": 8}}, 19810),
    ]:
        model = build_model(spec).eval()
        assert model(x).shape == (5, 10)
        assert sum(p.numel() for p in model.parameters()) == n_params, spec["name"]


def test_image_models_on_rgb_32x32():
    x = torch.randn(3, 3, 32, 32)
    resnet = SmallResNet(in_channels=3, image_size=32, width=4).eval()
    assert resnet(x).shape == (3, 10)
    assert resnet(x.flatten(1)).shape == (3, 10)  # flat inputs are viewed as images
    assert SmallCNN(in_channels=3, image_size=32, num_classes=7)(x).shape == (3, 7)


def test_mlp_structure():
    mlp = MLP([5, 7, 7, 2], activation="gelu")
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds == ["Linear", "GELU", "Linear", "GELU", "Linear"]  # no activation after the output


def test_model_errors():
    with pytest.raises(LandscapeError, match="unknown activation 'swish'; choose one of relu, tanh"):
        MLP([4, 4, 2], activation="swish")
    with pytest.raises(LandscapeError, match="widths must list at least inputs and outputs"):
        MLP([4])
    with pytest.raises(LandscapeError, match="too many for 8x8"):
        SmallCNN(channels=[4, 4, 4, 4])
    with pytest.raises(LandscapeError, match="building model 'mlp'.*unexpected keyword argument 'depth'"):
        build_model({"name": "mlp", "kwargs": {"depth": 3}})
    with pytest.raises(LandscapeError, match="returned int, not an nn.Module"):
        build_model({"entrypoint": "builtins:int", "kwargs": {}})
    with pytest.raises(LandscapeError, match="unknown model 'vit'"):
        model_spec("vit")
    with pytest.raises(LandscapeError, match="unknown model 'vit'"):
        build_model({"name": "vit"})
    assert model_spec("pkg.models:make", {"k": 1}) == {"entrypoint": "pkg.models:make", "kwargs": {"k": 1}}
