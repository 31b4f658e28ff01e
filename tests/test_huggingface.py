"""HuggingFace models built from small configs (never downloaded): a GPT-2 language model and a BERT
classifier on dict batches, through the API and the command line, against hand-written references."""

from __future__ import annotations

import json
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

import landscape_cli as ls

transformers = pytest.importorskip("transformers")

ENTRY = textwrap.dedent(
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    def gpt2():
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                            attn_implementation="eager")
        return GPT2LMHeadModel(config)

    def lm_batches():
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, 13, (6, 8), generator=g)
        mask = torch.ones(6, 8, dtype=torch.long)
        for row, keep in enumerate([8, 3, 6, 8, 2, 5]):
            mask[row, keep:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        return [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2], "labels": labels[i:i + 2]}
                for i in range(0, 6, 2)]

    def bert():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, attn_implementation="eager")
        return BertForSequenceClassification(config)

    def classification_batches():
        g = torch.Generator().manual_seed(2)
        ids = torch.randint(0, 20, (9, 6), generator=g)
        mask = torch.ones(9, 6, dtype=torch.long)
        mask[::2, 4:] = 0
        labels = torch.randint(0, 3, (9,), generator=g)
        return [{"input_ids": ids[i:i + 4], "attention_mask": mask[i:i + 4], "labels": labels[i:i + 4]}
                for i in range(0, 9, 4)]
    """
)


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    (folder / "hf_entry.py").write_text(ENTRY)
    import importlib.util

    spec = importlib.util.spec_from_file_location("hf_entry_for_tests", folder / "hf_entry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return folder, module


def flat_params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def reference_hvp(model, batches, mean_loss, v: torch.Tensor) -> torch.Tensor:
    """H v of the hand-written mean loss over all batches at once, by double backward in float64."""
    params = flat_params(model)
    loss = mean_loss(model, batches)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    parts = torch.split(v, [p.numel() for p in params])
    dot = sum((g.reshape(-1) * part).sum() for g, part in zip(grads, parts, strict=True))
    return torch.cat([h.reshape(-1) for h in torch.autograd.grad(dot, params)])


def causal_token_mean(model, batches) -> torch.Tensor:
    """Next-token cross-entropy over every unpadded target of every sequence, each token weighted alike."""
    total, count = 0.0, 0
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        shifted = b["labels"][:, 1:]
        total = total + F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                                        ignore_index=-100, reduction="sum")  # fmt: skip
        count += int((shifted != -100).sum())
    return total / count


def sample_mean(model, batches) -> torch.Tensor:
    out = [F.cross_entropy(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"],
                           reduction="sum") for b in batches]  # fmt: skip
    return sum(out) / sum(len(b["labels"]) for b in batches)


def test_gpt2_hessian_with_the_models_own_loss_weights_tokens_exactly(entry) -> None:
    _, module = entry
    model, batches = module.gpt2().double(), module.lm_batches()
    op = ls.hessian(model, batches, "model", device="cpu", dtype="float64")
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = reference_hvp(model, batches, causal_token_mean, v)
    # HF's ForCausalLMLoss casts the logits to float32 even in a float64 model: 4e-8 is its rounding
    assert float((op @ v - expected).norm() / expected.norm()) < 1e-6
    scape = ls.wrap(model, batches, "model", device="cpu", dtype="float64")
    assert scape.loss() == pytest.approx(float(causal_token_mean(model, batches).detach()), rel=1e-7)
    assert scape.problem.loss.causal


def test_bert_classifier_model_loss_equals_cross_entropy_on_logits(entry) -> None:
    _, module = entry
    model, batches = module.bert().double(), module.classification_batches()
    own = ls.hessian(model, batches, "model", device="cpu", dtype="float64")
    logits = ls.hessian(model, batches, "cross_entropy", device="cpu", dtype="float64")
    v = torch.randn(own.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = reference_hvp(model, batches, sample_mean, v)
    assert float((own @ v - expected).norm() / expected.norm()) < 1e-10
    assert float((logits @ v - expected).norm() / expected.norm()) < 1e-10
    ggn = ls.ggn(model, batches, "cross_entropy", device="cpu", dtype="float64")
    assert float(v @ (ggn @ v)) > 0


def test_gpt2_through_the_command_line(entry, tmp_path, cli) -> None:
    folder, module = entry
    model = module.gpt2()
    torch.save(model.state_dict(), tmp_path / "gpt2.pt")
    problem = ["--model", f"{folder}/hf_entry.py:gpt2", "--data", f"{folder}/hf_entry.py:lm_batches",
               "--loss", "model", "--device", "cpu", "--dtype", "float64"]  # fmt: skip
    result = cli("spectrum", str(tmp_path / "gpt2.pt"), *problem, "--top-k", "2", "--tol", "1e-8",
                     "--max-iter", "300", "--json", "--no-plot")  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    api = ls.hessian(module.gpt2().double(), module.lm_batches(), "model", device="cpu", dtype="float64")
    top = ls.lanczos_extremal(api, top_k=2, tol=1e-8, max_iter=300).top.values
    assert [e["eigenvalue"] for e in payload["top"]] == pytest.approx(list(top), rel=1e-6)
    reference = causal_token_mean(module.gpt2().double(), module.lm_batches())
    assert payload["loss"] == pytest.approx(float(reference.detach()), rel=1e-7)
    result = cli("surface", str(tmp_path / "gpt2.pt"), *problem, "--1d", "--x", "-0.5:0.5:5", "--json")
    assert result.code == 0, result.err
    surface = json.loads(result.out)
    assert surface["summary"]["center_loss"] == pytest.approx(payload["loss"], rel=1e-10)
    result = cli("check", str(tmp_path / "gpt2.pt"), *problem, "--max-top-eig", str(top[0] * 0.5))
    assert result.code == 1, result.err
    result = cli("spectrum", str(tmp_path / "gpt2.pt"), *problem, "--curvature", "ggn", "--overwrite")
    assert result.code == 2 and "Gauss-Newton matrix needs a loss of the model's output" in result.err
    assert (tmp_path / "gpt2.spectrum.h5").exists()  # the earlier result is kept


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_default_sdpa_attention_gets_exact_hvps_and_gauss_newton_products(name) -> None:
    """HF models use F.scaled_dot_product_attention by default, whose fused CPU kernel has neither a double
    backward nor forward-mode AD: the products run on its math kernel, so `--hvp auto` finds exact methods (no
    finite-difference warning) and the operators equal the eager-attention model's."""
    common = {"bos_token_id": 0, "eos_token_id": 0} if name == "gpt2" else {}

    def build(attention: str) -> torch.nn.Module:
        torch.manual_seed(0)
        if name == "gpt2":
            config = transformers.GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                             attn_implementation=attention, **common)  # fmt: skip
            return transformers.GPT2LMHeadModel(config)
        config = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=16, max_position_embeddings=16, num_labels=3,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                         attn_implementation=attention)  # fmt: skip
        return transformers.BertForSequenceClassification(config)

    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 13, (8, 8), generator=g)
    mask = torch.ones(8, 8, dtype=torch.long)
    mask[::3, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100) if name == "gpt2" else torch.randint(0, 3, (8,), generator=g)
    batches = [{"input_ids": ids[i : i + 4], "attention_mask": mask[i : i + 4], "labels": labels[i : i + 4]}
               for i in (0, 4)]  # fmt: skip
    fused = build("sdpa")
    assert fused.config._attn_implementation == "sdpa"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ls.LandscapeWarning)
        scape = ls.wrap(fused, batches, "model", device="cpu")
        op = scape.operator("hessian")
        v = torch.randn(op.size, generator=torch.Generator().manual_seed(0))
        product = op @ v
    assert scape.problem.hvp_method in ("jvp", "double-backward")
    eager = ls.wrap(build("eager"), batches, "model", device="cpu")
    expected = eager.operator("hessian") @ v
    assert float((product - expected).norm() / expected.norm()) < 1e-5
    if name == "bert":  # a loss on the logits has a Gauss-Newton matrix: J v through the attention as well
        ggn = ls.ggn(fused, batches, "cross_entropy", device="cpu") @ v
        reference = ls.ggn(build("eager"), batches, "cross_entropy", device="cpu") @ v
        assert float((ggn - reference).norm() / reference.norm()) < 1e-5


def test_finite_differences_on_a_transformer_in_float32(entry) -> None:
    """GPT-2's third derivatives along a random direction are large: at the textbook step cbrt(eps) the
    central difference was 20-38% off in float32; at finite_difference_step's it is 3e-4 to 8e-4 off."""
    _, module = entry
    model, batches = module.gpt2(), module.lm_batches()
    exact = ls.hessian(model, batches, "model", device="cpu", hvp="double-backward")
    approx = ls.hessian(model, batches, "model", device="cpu", hvp="finite-difference")
    for seed in range(3):
        v = torch.randn(exact.size, generator=torch.Generator().manual_seed(seed))
        expected = exact @ v
        assert float((approx @ v - expected).norm() / expected.norm()) < 2e-3
