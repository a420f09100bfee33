"""Few-epoch training of a genotype: Adam with per-epoch learning-rate decay, margin loss plus
weighted reconstruction loss, optional random shifts, a validation split taken from the training
images (the test images are only used when asked, for final reporting), and a wall-clock timeout.

`train` never raises for a candidate's failure: the result's status says what happened
(`ok`, `nan` for a non-finite loss, `timeout`, `oom` for out of memory, `invalid` for a genotype
that cannot be built for the data).
"""

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from capsacc.errors import SEED_LIMIT, GenotypeFormatError, InputError
from capsacc.files import atomic_path, prepare_output_file

from nas.backend import set_threads
from nas.datasets import Dataset
from nas.genotype import Genotype

STATUSES = ("ok", "nan", "timeout", "oom", "invalid")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    epochs; batch_size (images); learning_rate (Adam, first epoch); lr_decay (factor per epoch);
    recon_weight (weight of the summed squared pixel error; Sabour et al. 0.0005); shift_pixels
    (random shifts of up to this many pixels, 0 none); seed (0 to `SEED_LIMIT` - 1); timeout_s (wall
    clock for the whole candidate, None none); validation_split (fraction of the training images held out);
    train_samples (use this many training images, split included; None all); threads (intra-op
    threads of the backend for this process, None the backend's default); routings (iterations of
    dynamic routing).
    """

    epochs: int = 3
    batch_size: int = 100
    learning_rate: float = 0.001
    lr_decay: float = 0.9
    recon_weight: float = 0.0005
    shift_pixels: int = 2
    seed: int = 0
    timeout_s: float | None = None
    validation_split: float = 0.1
    train_samples: int | None = None
    threads: int | None = None
    routings: int = 3

    def __post_init__(self):
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "learning_rate": 0 < self.learning_rate < math.inf, "lr_decay": 0 < self.lr_decay <= 1,
                  "recon_weight": self.recon_weight >= 0, "shift_pixels": self.shift_pixels >= 0,
                  "seed": 0 <= self.seed < SEED_LIMIT,
                  "timeout_s": self.timeout_s is None or 0 < self.timeout_s < math.inf,
                  "validation_split": 0 <= self.validation_split < 1,
                  "train_samples": self.train_samples is None or self.train_samples >= 2,
                  "threads": self.threads is None or self.threads >= 1, "routings": self.routings >= 1}
        for name, good in checks.items():
            if not good:
                raise InputError(f"training setting '{name}': bad value {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """Outcome of one training: `status` (one of STATUSES), `val_accuracy` per completed epoch
    (fraction 0-1), `test_accuracy` (fraction, None unless asked; after a timeout that of the
    partly trained model), `seconds` (wall time,
    building included), `params` (classifier parameters, decoder excluded), `decoder_params`,
    `message` (why, for a status other than ok), `test_accuracy_per_epoch` (only with
    `test_every_epoch`), `steps` (optimizer steps done), and provenance: `genotype` trained (after
    adapting it to the data), `dataset` description, `config`, `backend`, `keras_version`."""

    status: str
    val_accuracy: list[float] = field(default_factory=list)
    test_accuracy: float | None = None
    steps: int = 0
    test_accuracy_per_epoch: list[float] = field(default_factory=list)
    seconds: float = 0.0
    params: int = 0
    decoder_params: int = 0
    message: str = ""
    genotype: list = field(default_factory=list)
    dataset: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    backend: str = ""
    keras_version: str = ""

    @property
    def epochs(self) -> int:
        """Epochs completed."""
        return len(self.val_accuracy)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (with `epochs`)."""
        return {**asdict(self), "epochs": self.epochs}


def split(dataset: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images: a seeded permutation of the training set,
    cut to `train_samples`, its last `validation_split` fraction held out."""
    order = np.random.default_rng(config.seed).permutation(len(dataset.x_train))
    if config.train_samples is not None:
        order = order[:config.train_samples]
    held_out = int(round(len(order) * config.validation_split))
    return np.sort(order[:len(order) - held_out]), np.sort(order[len(order) - held_out:])


def shift_images(images: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image `(n, h, w, c)` by a random offset of -pixels..pixels on both axes, zero-filled."""
    if pixels == 0:
        return images
    n, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
    rows, cols = rng.integers(0, 2 * pixels + 1, size=(2, n))
    return np.stack([padded[i, r:r + height, c:c + width] for i, (r, c) in enumerate(zip(rows, cols))])


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0


def train(genotype: Genotype, dataset: Dataset, config: TrainConfig = TrainConfig(), test: bool = False,
          progress: bool = True, save_path=None, test_every_epoch: bool = False) -> TrainResult:
    """Train `genotype` on `dataset` (adapting its input layer to the data's shape when they differ)
    and return a `TrainResult`; never raises for the candidate's failure (see the module docstring).

    `save_path`: write the evaluation model (image -> lengths, reconstruction) there as `.keras`
    (its folder is checked, and created, before training: `InputError` when it cannot be).
    `test_every_epoch`: also measure the test accuracy after every epoch (for reporting long runs;
    the test images never steer training).
    """
    start = time.monotonic()
    if save_path is not None:
        prepare_output_file(save_path)
    import keras
    set_threads(config.threads)
    result = TrainResult("ok", config=asdict(config), dataset=dataset.describe(), backend=keras.backend.backend(),
                         keras_version=keras.__version__, genotype=genotype.to_list())
    keras.backend.clear_session()
    try:
        return _train(genotype, dataset, config, test, progress, save_path, start, result, test_every_epoch)
    finally:
        keras.backend.clear_session()


def fit_to_data(genotype: Genotype, dataset: Dataset) -> Genotype:
    """`genotype` adapted to the dataset's input (side, channels; `Genotype.for_input`), checked to end
    in as many class capsules as the dataset has classes; `GenotypeFormatError` when it cannot be."""
    side, _, channels = dataset.input_shape
    if genotype.input_side != side * genotype.resize or genotype.input_channels != channels:
        genotype = genotype.for_input(side, channels)
    last = len(genotype.layers) - 1
    if genotype.layers[last][7] != dataset.n_classes:
        raise GenotypeFormatError(f"the class layer has {genotype.layers[last][7]} capsules, the dataset "
                                  f"{dataset.name} {dataset.n_classes} classes", index=last, field="ch_out")
    return genotype


def _train(genotype, dataset, config, test, progress, save_path, start, result, test_every_epoch) -> TrainResult:
    import keras
    from nas.builder import build_models

    try:
        genotype = fit_to_data(genotype, dataset)
        result.genotype = genotype.to_list()
        keras.utils.set_random_seed(config.seed)
        models = build_models(genotype, dataset.input_shape, dataset.n_classes, config.routings)
    except GenotypeFormatError as error:  # a genotype that does not fit the data is the candidate's failure
        return _finish(result, "invalid", f"{type(error).__name__}: {error}", start)
    except InputError:  # bad input (the data, the settings) is not the candidate's: every one would meet it
        raise
    except Exception as error:  # a genotype that does not build is the candidate's failure
        if _is_oom(error):
            return _finish(result, "oom", f"out of memory while building: {error}", start)
        return _finish(result, "invalid", f"{type(error).__name__}: {error}", start)
    result.params, result.decoder_params = models.params, models.decoder_params
    train_idx, val_idx = split(dataset, config)
    steps = math.ceil(len(train_idx) / config.batch_size)
    compile_models(models, config, steps)
    batches = _batches(keras)(dataset.x_train[train_idx], dataset.y_train[train_idx], dataset.n_classes,
                              config.batch_size, config.shift_pixels, config.seed)
    x_val, y_val = to_float(dataset.x_train[val_idx]), dataset.y_train[val_idx]
    test_set = (to_float(dataset.x_test), dataset.y_test) if test_every_epoch else None
    watch = _watch(keras)(models.classifier, x_val, y_val, config, start, steps, progress, test_set)
    if config.timeout_s is not None and time.monotonic() - start > config.timeout_s:
        return _finish(result, "timeout", f"building took longer than timeout_s={config.timeout_s}", start)
    try:
        models.train.fit(batches, epochs=config.epochs, verbose=0, callbacks=[watch])
    except Exception as error:
        if _is_oom(error):
            return _finish(result, "oom", f"out of memory: {type(error).__name__}: {str(error)[:300]}", start,
                           watch.val_accuracy)
        raise
    finally:
        watch.close()
    result.test_accuracy_per_epoch, result.steps = watch.test_accuracy, watch.steps_done
    if watch.status not in ("ok", "timeout"):
        return _finish(result, watch.status, watch.message, start, watch.val_accuracy)
    if test_every_epoch and watch.status == "ok":
        result.test_accuracy = watch.test_accuracy[-1]
    elif test:
        result.test_accuracy = accuracy(models.classifier, to_float(dataset.x_test), dataset.y_test,
                                        config.batch_size)
    if save_path is not None and watch.status == "ok":
        save_model(models.evaluate, save_path)
    return _finish(result, watch.status, watch.message, start, watch.val_accuracy)


def save_model(model, path) -> None:
    """Save a Keras model to `path` (`.keras`) atomically; a failure is an `InputError` naming the file."""
    try:
        with atomic_path(path) as temporary:
            model.save(temporary)
    except OSError as error:
        raise InputError(f"{path}: cannot save the model ({error.strerror or error})") from None


def compile_models(models, config: TrainConfig, steps_per_epoch: int) -> None:
    """Compile `models.train` (a `nas.builder.CapsModels`) as `train` does: Adam at
    `config.learning_rate`, multiplied by `config.lr_decay` every `steps_per_epoch` steps, on margin
    loss plus `config.recon_weight` x reconstruction loss."""
    import keras
    from nas.layers import margin_loss, reconstruction_loss
    schedule = keras.optimizers.schedules.ExponentialDecay(config.learning_rate, decay_steps=steps_per_epoch,
                                                           decay_rate=config.lr_decay, staircase=True)
    models.train.compile(optimizer=keras.optimizers.Adam(schedule),
                         loss=[margin_loss, reconstruction_loss], loss_weights=[1.0, config.recon_weight])


def accuracy(classifier, images: np.ndarray, labels: np.ndarray, batch_size: int = 100) -> float:
    """Fraction of `images` (float32 `(n, h, w, c)`) whose longest capsule is the label."""
    if len(images) == 0:
        return float("nan")
    lengths = classifier.predict(images, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(lengths, axis=-1) == labels))


def _finish(result: TrainResult, status: str, message: str, start: float, val_accuracy=()) -> TrainResult:
    result.status, result.message = status, message
    result.val_accuracy = list(val_accuracy)
    result.seconds = time.monotonic() - start
    return result


def _is_oom(error: BaseException) -> bool:
    return (isinstance(error, MemoryError) or type(error).__name__ in ("ResourceExhaustedError", "OutOfMemoryError")
            or "out of memory" in str(error).lower())


def _batches(keras):
    class Batches(keras.utils.PyDataset):
        """Shuffled, shifted batches `((images, one-hot labels), (one-hot labels, images))`."""

        def __init__(self, images, labels, n_classes, batch_size, shift_pixels, seed):
            super().__init__()
            self.images, self.labels, self.n_classes = images, labels, n_classes
            self.batch_size, self.shift_pixels = batch_size, shift_pixels
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(images))

        def __len__(self):
            return math.ceil(len(self.images) / self.batch_size)

        def __getitem__(self, index):
            chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
            images = to_float(shift_images(self.images[chosen], self.shift_pixels, self.rng))
            labels = np.eye(self.n_classes, dtype=np.float32)[self.labels[chosen]]
            return (images, labels), (labels, images)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(self.images))

    return Batches


def _watch(keras):
    class Watch(keras.callbacks.Callback):
        """Stops on a non-finite loss or the timeout, measures validation accuracy each epoch, shows progress."""

        def __init__(self, classifier, x_val, y_val, config, start, steps, progress, test_set):
            super().__init__()
            self.test_set, self.test_accuracy = test_set, []
            self.classifier, self.x_val, self.y_val = classifier, x_val, y_val
            self.config, self.start, self.steps, self.progress = config, start, steps, progress
            self.status, self.message, self.val_accuracy, self.bar, self.steps_done = "ok", "", [], None, 0

        def _stop(self, status, message):
            self.status, self.message = status, message
            self.model.stop_training = True

        def _late(self) -> bool:
            return self.config.timeout_s is not None and time.monotonic() - self.start > self.config.timeout_s

        def on_epoch_begin(self, epoch, logs=None):
            if self.progress:
                from tqdm import tqdm
                self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="step",
                                file=sys.stderr, mininterval=1 if sys.stderr.isatty() else 30, leave=True)

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", 0.0))
            self.steps_done += 1
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if not math.isfinite(loss):
                self._stop("nan", f"non-finite loss {loss} at epoch {len(self.val_accuracy) + 1}, step {batch + 1}")
            elif self._late():
                self._stop("timeout", f"timeout_s={self.config.timeout_s} reached at epoch "
                                      f"{len(self.val_accuracy) + 1}, step {batch + 1}")

        def on_epoch_end(self, epoch, logs=None):
            self.close()
            if self.status != "ok":
                return
            value = accuracy(self.classifier, self.x_val, self.y_val, self.config.batch_size)
            self.val_accuracy.append(value)
            if self.progress:
                print(f"epoch {epoch + 1}/{self.config.epochs}: loss {float((logs or {}).get('loss', 'nan')):.4f}, "
                      f"validation accuracy {100 * value:.2f}% ({time.monotonic() - self.start:.0f} s)",
                      file=sys.stderr, flush=True)
            if self.test_set is not None:
                self.test_accuracy.append(accuracy(self.classifier, *self.test_set, self.config.batch_size))
                if self.progress:
                    print(f"epoch {epoch + 1}/{self.config.epochs}: test accuracy {100 * self.test_accuracy[-1]:.2f}% "
                          f"({time.monotonic() - self.start:.0f} s)", file=sys.stderr, flush=True)
            if self._late():
                self._stop("timeout", f"timeout_s={self.config.timeout_s} reached after epoch {epoch + 1}")

        def close(self):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Watch
