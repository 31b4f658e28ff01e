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
