"""The classifier: a small convnet sized to reach about 99.4% MNIST test accuracy on a 2-core CPU.

Its input shape and class count are the dataset's (``data/prepared/dataset.json``), so the same
code builds it for any images; the layer sizes below are the MNIST defaults of ``params.yaml``.

Shaped after the Keras ``mnist_convnet`` example, with three conv blocks instead of two and, by
default, a hidden dense layer. The convs are unpadded (``valid``), so the maps shrink
28-26-13-11-5-3: on two CPU cores an epoch costs about two thirds of one with zero-padded
(``same``) convs, much of the saving in the dense head, which sees 3x3x64 features instead of
7x7x64 (see ``benchmarks/TIME_TO_ACCURACY_IDEAS.md``). Label smoothing (Szegedy et al. 2016) wins
back the accuracy the smaller head gives up.
The model takes raw uint8 images and does its own scaling, so the exported package needs no
separate preprocessing step.
"""

from __future__ import annotations

import keras
from keras import layers

from stages.config import BuildParams

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def _conv_block(x, filters: int, params: BuildParams):
    if not params.batch_norm:
        return layers.Conv2D(
            filters, params.kernel_size, padding=params.padding, activation="relu"
        )(x)
    x = layers.Conv2D(filters, params.kernel_size, padding=params.padding, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def build_model(
    params: BuildParams, policy: str, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Construct and compile the model described by ``params`` for uint8 images of
    ``input_shape`` (height, width, channels) and ``num_classes`` classes, under ``policy``."""
    # Layer names (conv2d, conv2d_1, ...) are saved with the model; a fresh session makes them
    # independent of whatever was built earlier in this process.
    keras.backend.clear_session()
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(params.seed)
        images = keras.Input(input_shape, dtype="uint8", name="images")
        x = layers.Rescaling(1 / 255)(images)
        for index, filters in enumerate(params.conv_filters):
            if index:
                x = layers.MaxPooling2D()(x)
            x = _conv_block(x, filters, params)
        x = layers.Flatten()(x)
        if params.dense_units:
            x = layers.Dropout(params.dropout)(x)
            x = layers.Dense(params.dense_units, activation="relu")(x)
        x = layers.Dropout(params.dropout)(x)
        # float32 output keeps softmax and the loss exact under mixed precision.
        probabilities = layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="probabilities"
        )(x)
        model = keras.Model(images, probabilities, name="convnet")
    finally:
        keras.config.set_dtype_policy(previous_policy)
    model.compile(
        optimizer=OPTIMIZERS[params.optimizer](learning_rate=params.learning_rate),
        # Labels arrive one-hot (stages.train.one_hot), as label smoothing needs them.
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
        # Saved with the model. Keras' default, "auto", would save True when built on a GPU, yet
        # the pipeline trains with TF op determinism, under which Keras refuses XLA (and TF has
        # no deterministic XLA MaxPool gradient on a GPU): off, stated, the same on any machine.
        jit_compile=False,
    )
    # Create the optimizer's slots now, so that the saved model loads without a state mismatch.
    model.optimizer.build(model.trainable_variables)
    return model
