"""Training step time of a genotype built by nascaps (Keras 3 layers) against the same network
written directly in TensorFlow (tf.Variable, tf.nn, GradientTape, one tf.function), measured in the
same run, and inference throughput of the nascaps evaluation model.

    python benchmarks/bench_train.py                      # capsnet, batch 100 (slow on a laptop CPU)
    python benchmarks/bench_train.py --steps 3 --genotype small

Both versions compute the same thing: 'same'-padded convolutions with ReLU, PrimaryCaps (convolution,
reshape, squash), ClassCaps with three routing iterations (votes stopped in the first two), capsule
lengths, the decoder masked by the label, margin loss + 0.0005 x summed squared reconstruction error,
and an Adam step. Only Sabour-style genotypes (type 1 capsule layers, no ConvCaps after PrimaryCaps)
are written directly. Needs the TensorFlow backend. Prints a table of step times (s), their ratio
(direct / nascaps: 1.0 means nascaps is as fast; the goal is >= 0.9) and images/s of inference.
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SMALL = [[0, 28, 1, 1, 9, 1, 28, 64, 1], [1, 28, 64, 1, 9, 2, 14, 8, 8], [1, 14, 8, 8, 9, 2, 7, 10, 16], [-1], [1]]


def direct_tensorflow(genotype, batch: int, seed: int):
    """The network written with TensorFlow primitives; returns a compiled train step(images, labels) -> loss."""
    import tensorflow as tf
    conv, primary, classcaps = genotype.layers
    rng = np.random.default_rng(seed)

    def glorot(shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return tf.Variable(rng.uniform(-limit, limit, shape).astype(np.float32))

    k0, c0 = conv[4], conv[7] * conv[8]
    k1, caps, atoms = primary[4], primary[7], primary[8]
    grid = primary[6]
    classes, out_atoms = classcaps[7], classcaps[8]
    n_in = grid * grid * caps
    weights = [glorot((k0, k0, 1, c0), k0 * k0, k0 * k0 * c0), tf.Variable(tf.zeros(c0)),
               glorot((k1, k1, c0, caps * atoms), k1 * k1 * c0, k1 * k1 * caps * atoms),
               tf.Variable(tf.zeros(caps * atoms)),
               tf.Variable(rng.normal(0, 0.01, (n_in, atoms, classes * out_atoms)).astype(np.float32))]
    sizes = [classes * out_atoms, 512, 1024, 784]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights += [glorot((fan_in, fan_out), fan_in, fan_out), tf.Variable(tf.zeros(fan_out))]
    moments = [(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w))) for w in weights]
    step_count = tf.Variable(0.0)

    def squash(v):
        n2 = tf.reduce_sum(v * v, axis=-1, keepdims=True)
        return v * (n2 / (1 + n2) / tf.sqrt(n2 + 1e-7))

    def loss_fn(images, labels):
        x = tf.nn.relu(tf.nn.conv2d(images, weights[0], conv[5], "SAME") + weights[1])
        x = tf.nn.conv2d(x, weights[2], primary[5], "SAME") + weights[3]
        u = squash(tf.reshape(x, (-1, n_in, atoms)))
        votes = tf.reshape(tf.einsum("bni,nio->bno", u, weights[4]), (-1, n_in, classes, out_atoms))
        stopped = tf.stop_gradient(votes)
        logits = tf.zeros_like(votes[..., 0])
        for iteration in range(3):
            c = tf.nn.softmax(logits, axis=-1)
            v = squash(tf.reduce_sum(c[..., None] * (votes if iteration == 2 else stopped), axis=1))
            if iteration < 2:
                logits += tf.reduce_sum(stopped * v[:, None], axis=-1)
        lengths = tf.sqrt(tf.reduce_sum(v * v, axis=-1) + 1e-7)
        margin = tf.reduce_sum(labels * tf.square(tf.nn.relu(0.9 - lengths))
                               + 0.5 * (1 - labels) * tf.square(tf.nn.relu(lengths - 0.1)), axis=-1)
        h = tf.reshape(v * labels[..., None], (-1, classes * out_atoms))
        h = tf.nn.relu(h @ weights[5] + weights[6])
        h = tf.nn.relu(h @ weights[7] + weights[8])
        recon = tf.sigmoid(h @ weights[9] + weights[10])
        error = tf.reduce_sum(tf.square(recon - tf.reshape(images, (-1, 784))), axis=-1)
        return tf.reduce_mean(margin) + 0.0005 * tf.reduce_mean(error)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(images, labels)
        grads = tape.gradient(loss, weights)
        step_count.assign_add(1.0)
        correction = tf.sqrt(1 - 0.999 ** step_count) / (1 - 0.9 ** step_count)
        for w, g, (m, s) in zip(weights, grads, moments):
            m.assign(0.9 * m + 0.1 * g)
            s.assign(0.999 * s + 0.001 * g * g)
            w.assign_sub(0.001 * correction * m / (tf.sqrt(s) + 1e-7))
        return loss

    return step


def nascaps_keras(genotype, batch: int, seed: int):
    """The nascaps-built model, compiled as nas.train compiles it; returns (train step, models)."""
    import keras

    from nas.builder import build_models
    from nas.layers import margin_loss, reconstruction_loss
    keras.utils.set_random_seed(seed)
    models = build_models(genotype)
    models.train.compile(optimizer=keras.optimizers.Adam(0.001), loss=[margin_loss, reconstruction_loss],
                         loss_weights=[1.0, 0.0005])

    def step(images, labels):
        return models.train.train_on_batch([images, labels], [labels, images])

    return step, models


def time_steps(step, images, labels, warmup: int, steps: int) -> float:
    """Median seconds of `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        np.asarray(step(images, labels))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        np.asarray(step(images, labels))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genotype", default="capsnet", help="capsnet, small, or a genotype JSON file")
    parser.add_argument("--batch", type=int, default=100, help="images per step (default 100)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5, median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    from nas.backend import set_threads
    from nas.genotype import Genotype
    set_threads(args.threads)
    import keras
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("bench_train.py compares against TensorFlow: run it with KERAS_BACKEND=tensorflow")
    if args.genotype == "small":
        genotype = Genotype.from_list(SMALL)
    elif args.genotype == "capsnet":
        genotype = Genotype.preset("capsnet")
    else:
        genotype = Genotype.load(args.genotype)
    if [layer[0] for layer in genotype.layers] != [0, 1, 1] or genotype.input_side != 28 or genotype.resize != 1:
        raise SystemExit("the direct version covers conv + PrimaryCaps + ClassCaps genotypes on 28 x 28 x 1 images")

    rng = np.random.default_rng(0)
    images = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)]
    direct = direct_tensorflow(genotype, args.batch, 0)
    nascaps_step, models = nascaps_keras(genotype, args.batch, 0)
    direct_s = time_steps(direct, images, labels, args.warmup, args.steps)
    nascaps_s = time_steps(nascaps_step, images, labels, args.warmup, args.steps)
    models.classifier.predict(images, batch_size=args.batch, verbose=0)
    start = time.perf_counter()
    repeats = max(1, args.steps)
    for _ in range(repeats):
        models.classifier.predict(images, batch_size=args.batch, verbose=0)
    images_per_s = repeats * args.batch / (time.perf_counter() - start)
    record = {"genotype": genotype.to_list(), "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "threads": args.threads, "backend": keras.backend.backend(), "keras_version": keras.__version__,
              "params": models.params, "direct_step_s": direct_s, "nascaps_step_s": nascaps_s,
              "ratio_direct_over_nascaps": direct_s / nascaps_s, "inference_images_per_s": images_per_s}
    if args.json:
        print(json.dumps(record))
        return
    print(f"genotype {args.genotype} ({models.params} parameters), batch {args.batch}, "
          f"median of {args.steps} steps after {args.warmup}, backend {record['backend']} {keras.__version__}, "
          f"threads {args.threads or 'default'}")
    print(f"{'implementation':<28}{'step_s':>10}")
    print(f"{'direct TensorFlow':<28}{direct_s:>10.3f}")
    print(f"{'nascaps (Keras 3 layers)':<28}{nascaps_s:>10.3f}")
    print(f"{'ratio direct / nascaps':<28}{direct_s / nascaps_s:>10.3f}   (goal >= 0.9)")
    print(f"{'inference images/s':<28}{images_per_s:>10.1f}   (nascaps classifier, batch {args.batch})")


if __name__ == "__main__":
    main()
