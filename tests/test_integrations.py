"""The sharpness callbacks in real trainers: PyTorch Lightning (CSV logger) and the HuggingFace Trainer (a tiny
GPT-2 from a config) log values equal to a direct Lanczos at the same weights."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import landscape_cli as ls


def test_lightning_logs_sharpness_through_its_own_logger(tmp_path) -> None:
    lightning = pytest.importorskip("lightning")
    from landscape_cli.integrations.lightning import SharpnessCallback

    torch.manual_seed(0)
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    data = TensorDataset(x, y)

    class Classifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.net(inputs)

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.2)

    module = Classifier()
    callback = SharpnessCallback(data, every=4, measures=("top", "grad_norm", "eos"), samples=None, tol=1e-8)
    logger = lightning.pytorch.loggers.CSVLogger(tmp_path)
    trainer = lightning.Trainer(max_steps=12, logger=logger, callbacks=[callback], enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                                log_every_n_steps=1)  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=32))
    logger.save()
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r.get("sharpness/top_eigenvalue")]
    assert [int(r["step"]) for r in rows] == [4, 8, 12]  # the optimizer steps taken
    direct = ls.wrap(module, (x, y), device="cpu").spectrum(1, tol=1e-8).lanczos.top.values[0]
    assert float(rows[-1]["sharpness/top_eigenvalue"]) == pytest.approx(float(direct), rel=1e-5)
    assert float(rows[-1]["sharpness/eos_ratio"]) == pytest.approx(float(direct) * 0.2 / 2, rel=1e-5)


class Tokens(Dataset):
    def __init__(self, n: int = 24, length: int = 16, vocab: int = 64) -> None:
        g = torch.Generator().manual_seed(3)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_the_huggingface_trainer_logs_sharpness_through_trainer_log(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from landscape_cli.integrations.hf import SharpnessCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager")  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    data = Tokens()
    callback = SharpnessCallback(data, loss="model", every=3, samples=None, tol=1e-6)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=8,
                                          learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_steps=100, disable_tqdm=True)  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    callback.attach(trainer)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "sharpness/top_eigenvalue" in h]
    assert [h["step"] for h in logged] == [3, 6]
    direct = ls.wrap(model, data, loss="model", device="cpu").spectrum(1, tol=1e-6).lanczos.top.values[0]
    assert logged[-1]["sharpness/top_eigenvalue"] == pytest.approx(float(direct), rel=1e-4)


@pytest.mark.parametrize("variant", ["sam", "ssam", "eigensam"])
def test_the_sharpness_aware_trainer_steps_as_a_users_two_step_loop(variant, tmp_path) -> None:
    """SharpnessAwareTrainer with a SAM-family optimizer over AdamW on a tiny GPT-2 with its default SDPA
    attention (Eigen-SAM's power iterations need its double backward): the weights after 5 steps equal a
    plain first_step/second_step loop with the Trainer's gradient clipping, and the sharpness callback records
    the perturbation's alignment through accelerate's optimizer wrapper."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from landscape_cli import optim
    from landscape_cli.integrations.hf import SharpnessAwareTrainer, SharpnessCallback

    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)  # fmt: skip
    classes = {"sam": (optim.SAM, {}), "ssam": (optim.SSAM, {}), "eigensam": (optim.EigenSAM, {"eigen_every": 2})}
    cls, options = classes[variant]

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(config)

    data = Tokens(n=8)
    data.ids[:, 0] = 1
    labels = data.ids.clone()
    labels[:, 0] = -100  # the Trainer counts label tokens unshifted: this makes its count the model's

    class Labelled(Tokens):
        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": data.ids[i], "labels": labels[i]}

    model = fresh()
    opt = cls(model.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-3, **options)
    callback = SharpnessCallback(Labelled(n=8), loss="model", every=5, samples=None, measures=("top", "alignment"))
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=8,
                                          report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                                          lr_scheduler_type="constant", max_grad_norm=0.5,
                                          logging_steps=100)  # fmt: skip
    trainer = SharpnessAwareTrainer(model=model, args=args, train_dataset=Labelled(n=8), optimizers=(opt, None),
                                    callbacks=[callback])  # fmt: skip
    callback.attach(trainer)
    trainer.train()

    reference = fresh()
    ref = cls(reference.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-3, clip_grad_norm=0.5, **options)
    order = torch.argsort(data.ids[:, 1])  # any order: the batch is the whole data set

    def loss() -> torch.Tensor:
        return reference(input_ids=data.ids[order], labels=labels[order]).loss

    for _ in range(5):
        loss().backward()
        if variant == "eigensam":
            ref.first_step(zero_grad=True, loss_fn=loss)
        else:
            ref.first_step(zero_grad=True)
        loss().backward()
        ref.second_step(zero_grad=True)
    assert opt.steps == ref.steps == 5
    moved = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), fresh().parameters(), strict=True))
    assert moved > 4e-3  # five AdamW steps of lr 1e-3
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        # Adam divides by sqrt(v): a weight whose gradient is near zero moves by its rounding (batch order)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    logged = [h for h in trainer.state.log_history if "sharpness/alignment" in h]
    assert len(logged) == 1 and 0 < logged[0]["sharpness/alignment"] <= 1


def test_the_sharpness_aware_trainer_refuses_what_it_cannot_step(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from landscape_cli import optim
    from landscape_cli.integrations.hf import SharpnessAwareTrainer

    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    cases = [
        (torch.optim.SGD(model.parameters(), lr=0.1), 1, "needs a landscape_cli.optim optimizer"),
        (optim.MSAM(model.parameters(), torch.optim.SGD, lr=0.1), 1, "MSAM cuts the batch"),
        (optim.SAM(model.parameters(), torch.optim.SGD, lr=0.1), 2, "takes no gradient accumulation"),
    ]
    for opt, accumulation, message in cases:
        args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                                              gradient_accumulation_steps=accumulation, report_to=[], use_cpu=True,
                                              save_strategy="no", disable_tqdm=True)  # fmt: skip
        trainer = SharpnessAwareTrainer(model=model, args=args, train_dataset=Tokens(n=8), optimizers=(opt, None))
        with pytest.raises(ValueError, match=message):
            trainer.train()


def test_a_sam_optimizer_in_lightning_steps_as_the_two_step_loop() -> None:
    """Lightning's automatic optimization calls `optimizer.step(closure)`: SAM runs the closure twice, and a
    BatchNorm network's weights and running statistics equal the davda54-style loop's."""
    lightning = pytest.importorskip("lightning")
    from landscape_cli import optim

    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))

    def net() -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.BatchNorm1d(12), torch.nn.Tanh(),
                                   torch.nn.Linear(12, 3))  # fmt: skip

    class Classifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.calls = net(), 0

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            self.calls += 1
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):  # noqa: ANN201
            return optim.SAM(self.parameters(), torch.optim.SGD, rho=0.1, lr=0.2, momentum=0.9, model=self)

    module = Classifier()
    trainer = lightning.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=32))
    assert module.calls == 12 and trainer.global_step == 6

    reference = net()
    opt = optim.SAM(reference.parameters(), torch.optim.SGD, rho=0.1, lr=0.2, momentum=0.9)
    for step in range(6):
        xb, yb = x[32 * (step % 2) : 32 * (step % 2) + 32], y[32 * (step % 2) : 32 * (step % 2) + 32]
        F.cross_entropy(reference(xb), yb).backward()
        opt.first_step(zero_grad=True)
        with optim.frozen_batchnorm(reference):
            F.cross_entropy(reference(xb), yb).backward()
        opt.second_step(zero_grad=True)
    for a, b in zip(module.net.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
