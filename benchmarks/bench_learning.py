"""Few-step learning of nascaps' `capsnet` against a plain Keras 3 CapsNet, on the same batches.

    python benchmarks/bench_learning.py                  # 60 steps of batch 100, seed 1
    python benchmarks/bench_learning.py --steps 20 --threads 2

The plain CapsNet is written here with Keras 3 layers and `keras.ops`, independently of `nas/`:
Sabour et al.'s layers (conv 9x9 256 ReLU, PrimaryCaps 9x9 stride 2 32 x 8 with 'valid' padding,
1,152 primary capsules, DigitCaps 10 x 16 with a bias-free transformation matrix per
(input, class) pair initialised N(0, 0.01) and three routing iterations, the fully connected
512-1024-784 decoder masked by the label), margin loss + 0.0005 x summed squared reconstruction
error, Adam at the learning rate of `nascaps train`, its two convolutions He-normal
(`--plain-init glorot_uniform` for Keras' default), 'valid' padding (`--plain-padding same` for
NASCaps' 14 x 14 grid). `--models plain` trains only the plain one.

nascaps' `capsnet` is built by `nas.builder.build_models` and compiled by `nas.train.compile_models`,
exactly as `nascaps train capsnet` trains it. Both see the same images: the embedded 6,000-image
MNIST subset cut and split as `nascaps train --train-samples 6000 --seed 1` does (5,400 training,
600 validation images), the same shuffled batches with the same random shifts of up to 2 pixels.
Prints on stderr the validation accuracy at each checkpoint as it goes, then a table (median step
seconds after the first, validation accuracy at each checkpoint) and the ratio nascaps / plain at
the last step (goal >= 0.95).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas.backend import configure_environment  # noqa: E402

configure_environment()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from nas.backend import set_threads  # noqa: E402
from nas.builder import build_models  # noqa: E402
from nas.datasets import load_dataset  # noqa: E402
from nas.genotype import Genotype  # noqa: E402
from nas.train import TrainConfig, accuracy, compile_models, shift_images, split, to_float  # noqa: E402

GOAL = 0.95


def plain_squash(vectors):
    """v |v|² / (1 + |v|²) / |v| along the last axis (epsilon 1e-7 under the root)."""
    norm2 = ops.sum(ops.square(vectors), axis=-1, keepdims=True)
    return vectors * (norm2 / (1.0 + norm2) / ops.sqrt(norm2 + 1e-7))


class PlainDigitCaps(keras.layers.Layer):
    """`(batch, inputs, 8)` -> `(batch, classes, 16)`: u_hat = W_ij u_i, three routing iterations."""

    def __init__(self, classes: int = 10, atoms: int = 16, routings: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.classes, self.atoms, self.routings = classes, atoms, routings

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[1], self.classes, self.atoms, input_shape[2]),
                                 initializer=keras.initializers.RandomNormal(stddev=0.01))

    def call(self, u):
        u_hat = ops.einsum("ijad,bid->bija", self.w, u)
        fixed = ops.stop_gradient(u_hat)
        b = ops.zeros(ops.shape(u_hat)[:3])
        for r in range(self.routings):
            c = ops.softmax(b, axis=2)
            if r == self.routings - 1:
                return plain_squash(ops.einsum("bij,bija->bja", c, u_hat))
            v = plain_squash(ops.einsum("bij,bija->bja", c, fixed))
            b = b + ops.einsum("bija,bja->bij", fixed, v)


def plain_capsnet(conv_init: str, padding: str = "valid", input_shape=(28, 28, 1), classes: int = 10):
    """Sabour et al.'s CapsNet with `conv_init` convolution kernels and `padding` ('valid': 6 x 6 x 32
    primary capsules; 'same': 14 x 14 x 32 as NASCaps' genotype): (train model [image, label] ->
    [lengths, reconstruction], classifier)."""
    image = keras.Input(input_shape)
    label = keras.Input((classes,))
    x = keras.layers.Conv2D(256, 9, activation="relu", padding=padding, kernel_initializer=conv_init)(image)
    x = keras.layers.Conv2D(32 * 8, 9, strides=2, padding=padding, kernel_initializer=conv_init)(x)
    x = keras.layers.Lambda(lambda t: plain_squash(ops.reshape(t, (-1, t.shape[1] * t.shape[2] * 32, 8))))(x)
    digits = PlainDigitCaps(classes)(x)
    lengths = keras.layers.Lambda(lambda v: ops.sqrt(ops.sum(ops.square(v), axis=-1) + 1e-7))(digits)
    masked = keras.layers.Lambda(lambda t: ops.reshape(t[0] * ops.expand_dims(t[1], -1), (-1, classes * 16)))(
        [digits, label])
    h = keras.layers.Dense(512, activation="relu")(masked)
    h = keras.layers.Dense(1024, activation="relu")(h)
    h = keras.layers.Dense(int(np.prod(input_shape)), activation="sigmoid")(h)
    reconstruction = keras.layers.Reshape(input_shape)(h)
    return keras.Model([image, label], [lengths, reconstruction]), keras.Model(image, lengths)


def plain_losses():
    """Margin loss (0.9, 0.1, 0.5) and summed squared pixel error, per image."""
    def margin(y_true, y_pred):
        return ops.sum(y_true * ops.square(ops.relu(0.9 - y_pred))
                       + 0.5 * (1 - y_true) * ops.square(ops.relu(y_pred - 0.1)), axis=-1)

    def pixels(y_true, y_pred):
        return ops.sum(ops.square(y_true - y_pred), axis=(1, 2, 3))

    return [margin, pixels]


def batches(images, labels, config: TrainConfig, steps: int):
    """The `steps` training batches ((image, one-hot), (one-hot, image)): a new seeded shuffle each epoch."""
    rng = np.random.default_rng(config.seed)
    per_epoch = -(-len(images) // config.batch_size)
    out = []
    for step in range(steps):
        if step % per_epoch == 0:
            order = rng.permutation(len(images))
        chosen = order[(step % per_epoch) * config.batch_size:(step % per_epoch + 1) * config.batch_size]
        x = to_float(shift_images(images[chosen], config.shift_pixels, rng))
        y = np.eye(10, dtype=np.float32)[labels[chosen]]
        out.append(((x, y), (y, x)))
    return out


def run(name, train_model, classifier, data, checkpoints, x_val, y_val, batch_size):
    """Train on `data`, measuring validation accuracy at the `checkpoints` (step counts); returns
    ({step: accuracy}, median seconds of the steps after the first)."""
    scores, seconds = {}, []
    for step, (inputs, targets) in enumerate(data, 1):
        start = time.perf_counter()
        train_model.train_on_batch(inputs, targets)
        seconds.append(time.perf_counter() - start)
        if step in checkpoints:
            scores[step] = accuracy(classifier, x_val, y_val, batch_size)
            print(f"{name}: step {step}, validation accuracy {scores[step]:.3f}", file=sys.stderr, flush=True)
    return scores, float(np.median(seconds[1:] or seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--every", type=int, default=20, help="also measure validation accuracy every N steps")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    parser.add_argument("--plain-init", default="he_normal", choices=("he_normal", "glorot_uniform"),
                        help="kernel initializer of the plain CapsNet's two convolutions (default he_normal)")
    parser.add_argument("--plain-padding", default="valid", choices=("valid", "same"),
                        help="padding of the plain CapsNet's convolutions (default valid, Sabour et al.'s)")
    parser.add_argument("--models", default="nascaps,plain", help="which to train (default nascaps,plain)")
    args = parser.parse_args()
    set_threads(args.threads)
    config = TrainConfig(batch_size=args.batch_size, seed=args.seed, train_samples=args.train_samples)
    dataset = load_dataset()
    train_idx, val_idx = split(dataset, config)
    data = batches(dataset.x_train[train_idx], dataset.y_train[train_idx], config, args.steps)
    x_val, y_val = to_float(dataset.x_train[val_idx]), dataset.y_train[val_idx]
    checkpoints = set(range(args.every, args.steps + 1, args.every)) | {args.steps}
    steps_per_epoch = -(-len(train_idx) // args.batch_size)
    rows = []

    chosen = args.models.split(",")
    if "nascaps" in chosen:
        keras.utils.set_random_seed(args.seed)
        models = build_models(Genotype.preset("capsnet"))
        compile_models(models, config, steps_per_epoch)
        rows.append(("nascaps capsnet", models.params, *run("nascaps", models.train, models.classifier, data,
                                                             checkpoints, x_val, y_val, args.batch_size)))
        keras.backend.clear_session()
    if "plain" in chosen:
        keras.utils.set_random_seed(args.seed)
        train_model, classifier = plain_capsnet(args.plain_init, args.plain_padding)
        schedule = keras.optimizers.schedules.ExponentialDecay(config.learning_rate, steps_per_epoch,
                                                               config.lr_decay, staircase=True)
        train_model.compile(optimizer=keras.optimizers.Adam(schedule), loss=plain_losses(),
                            loss_weights=[1.0, config.recon_weight])
        rows.append((f"plain CapsNet ({args.plain_init}, {args.plain_padding})", classifier.count_params(),
                     *run("plain", train_model, classifier, data, checkpoints, x_val, y_val, args.batch_size)))

    marks = sorted(checkpoints)
    print(f"embedded MNIST subset: {len(train_idx)} training / {len(val_idx)} validation images, batch "
          f"{args.batch_size}, seed {args.seed}, {args.steps} steps, backend {keras.backend.backend()} "
          f"{keras.__version__}")
    print(f"{'model':24s} {'parameters':>11s} {'step_s':>7s} " + " ".join(f"{'acc@' + str(m):>8s}" for m in marks))
    for name, params, scores, step_s in rows:
        print(f"{name:24s} {params:11d} {step_s:7.2f} " + " ".join(f"{scores[m]:8.3f}" for m in marks))
    if len(rows) == 2:
        ratio = rows[0][2][args.steps] / rows[1][2][args.steps]
        print(f"ratio nascaps / plain at step {args.steps}: {ratio:.3f}   (goal >= {GOAL})")


if __name__ == "__main__":
    main()
