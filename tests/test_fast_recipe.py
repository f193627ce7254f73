"""The fast CIFAR-10 recipe at tiny scale: augmentation, whitening, flip-TTA, schedule, a run with ConfusionScore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy
from torch.utils.data import DataLoader, TensorDataset

from lightning_difficulty import ConfusionScore, IndexedDataset
from lightning_difficulty.demo.fast_cifar import (
    FastCifarModule,
    FastCifarNet,
    random_flip_translate,
    translate,
    warmup_decay,
    whitening_filters,
)
from lightning_difficulty.pipeline.capture import ActivationReducer, top_level_blocks
from tests.helpers import load_example, trainer_kwargs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar10.py"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny convolutions on two threads of a busy machine wait on each other for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _colour_task(n: int, seed: int) -> TensorDataset:
    """4 classes told apart by a colour offset (flip- and shift-invariant), under pixel noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    offsets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]], dtype=np.float32)
    images = rng.normal(size=(n, 3, 16, 16)).astype(np.float32) + offsets[labels][:, :, None, None]
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


def test_translate_matches_a_hand_computed_shift() -> None:
    image = torch.arange(9.0).view(1, 1, 3, 3)  # rows [0 1 2], [3 4 5], [6 7 8]
    right_up = translate(image, torch.tensor([1]), torch.tensor([-1]), max_shift=1)
    # right by 1 (reflect: column 1 enters on the left), up by 1 (reflect: row 1 enters at the bottom)
    assert right_up[0, 0].tolist() == [[4.0, 3.0, 4.0], [7.0, 6.0, 7.0], [4.0, 3.0, 4.0]]
    assert translate(image, torch.tensor([0]), torch.tensor([0]), max_shift=2).equal(image)


def test_random_flip_translate_is_a_flip_and_shift_of_each_image() -> None:
    images = torch.randn(12, 3, 8, 8)
    out = random_flip_translate(images, max_shift=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    flipped = np.pad(images.numpy()[..., ::-1], ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    for i in range(len(images)):
        candidates = [
            source[i, :, 2 - dy : 10 - dy, 2 - dx : 10 - dx]
            for source in (padded, flipped)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
        ]
        assert sum(np.array_equal(out[i].numpy(), c) for c in candidates) >= 1, f"image {i} is not a flip+shift"


def test_whitening_filters_give_patches_of_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 3))
    images = torch.from_numpy(np.einsum("dc,nchw->ndhw", mixing, rng.normal(size=(200, 3, 12, 12))).astype(np.float32))
    filters = whitening_filters(images, eps=0.0)
    assert filters.shape == (24, 3, 2, 2)
    np.testing.assert_allclose(filters[12:].numpy(), -filters[:12].numpy())
    x = images.numpy()
    patches = np.stack(
        [x[:, c, i : i + 11, j : j + 11] for c in range(3) for i in range(2) for j in range(2)], axis=-1
    ).reshape(-1, 12)
    whitened = patches @ filters[:12].numpy().reshape(12, 12).T
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(12), atol=1e-3)


def test_eval_forward_is_the_mean_of_the_image_and_mirror_logits(one_thread: None) -> None:
    torch.manual_seed(0)
    module = FastCifarModule(width=4, num_classes=4)
    module.net.init_whitening(torch.randn(8, 3, 16, 16))
    x = torch.randn(5, 3, 16, 16)
    module.eval()
    with torch.no_grad():
        by_hand = (module.net(x) + module.net(torch.flip(x, dims=[3]))) / 2
        np.testing.assert_allclose(module(x).numpy(), by_hand.numpy(), rtol=1e-5, atol=1e-6)
        module.hparams["tta"] = False
        np.testing.assert_allclose(module(x).numpy(), module.net(x).numpy(), rtol=1e-6, atol=1e-7)
    module.train()
    assert module(x).shape == (5, 4)


def test_warmup_decay_is_linear_up_then_linear_down() -> None:
    factors = [warmup_decay(step, 10, 0.2) for step in range(11)]
    expected = [0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    np.testing.assert_allclose(factors, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"width": 0}, "width=0"),
        ({"max_shift": -1}, "max_shift=-1"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"label_smoothing": 1.5}, "label_smoothing=1.5"),
        ({"whitening_images": 1}, "whitening_images=1"),
    ],
)
def test_bad_arguments_are_refused_with_the_value(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        FastCifarModule(**kwargs)


def test_probed_blocks_are_the_network_stages() -> None:
    assert list(top_level_blocks(FastCifarModule(width=4))) == [
        "net.whiten",
        "net.block1",
        "net.block2",
        "net.block3",
        "net.pool",
        "net.head",
    ]
    with pytest.raises(ValueError, match="images: shape"):
        FastCifarNet(width=4).init_whitening(torch.zeros(4, 1, 8, 8))


def test_learns_a_colour_task_and_confusion_score_reads_the_tta_logits(tmp_path: Path, one_thread: None) -> None:
    torch.manual_seed(0)
    train = DataLoader(IndexedDataset(_colour_task(256, seed=1)), batch_size=32, shuffle=True)
    val_set = _colour_task(64, seed=2)
    val = DataLoader(IndexedDataset(val_set), batch_size=32)
    module = FastCifarModule(width=4, num_classes=4, lr=0.2, whitening_images=64)
    score = ConfusionScore(record="none")
    kwargs = trainer_kwargs(tmp_path, num_sanity_val_steps=0, check_val_every_n_epoch=4)
    trainer = L.Trainer(max_epochs=4, callbacks=[score], **kwargs)
    trainer.fit(module, train, val)

    assert bool(module.whitened)
    assert float(trainer.callback_metrics["val/acc"]) > 0.8  # chance is 0.25
    module.eval()
    with torch.no_grad():
        x = val_set.tensors[0]
        tta = ((module.net(x) + module.net(x.flip(-1))) / 2).numpy().astype(np.float64)
    assert (tta.argmax(1) == val_set.tensors[1].numpy()).mean() > 0.8
    # validation ran once (epoch 4): its confusion is the entropy of the flip-averaged logits of the final model
    np.testing.assert_allclose(score.scores["val"], scipy_entropy(softmax(tta, axis=1), axis=1), rtol=1e-4)
    assert score.scores["train"].shape == (256,) and np.isfinite(score.scores["train"]).all()


def test_projected_layer_stays_float32_under_bf16_autocast() -> None:
    """The recipe trains in bf16-mixed: the fit-end pass's projection must not come back as (numpy-less) bf16."""
    reducer = ActivationReducer("block2", "auto")
    activations = torch.randn(3, 128, 4, 4)  # 128 channels x 2x2 grid = 512 dims > 256: projected
    plain = reducer(activations)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = reducer(activations)
    assert mixed.dtype == torch.float32
    assert mixed.equal(plain)


def test_cifar10_example_defaults_to_the_fast_recipe_on_all_images() -> None:
    example = load_example(EXAMPLE, "cifar10_example")
    fast = example.parse_args(["--data-dir", "."])
    assert (fast.model, fast.train_subset, fast.epochs, fast.width, fast.batch_size) == ("fast", None, 10, 32, 512)
    assert isinstance(example.build_model(fast)[0], FastCifarModule)
    old = example.parse_args(["--model", "smallcnn", "--epochs", "3"])
    assert (old.epochs, old.width, old.batch_size) == (3, 16, 128)
    assert example.build_model(old)[1] == "32-true"
