"""What is being learned: 28x28 grayscale images of handwritten digits, in ten classes.

Kept apart from the dataset's pins (``stages/mnist.py``), so that a new version of the raw data
re-runs the data stages only, not ``build``.
"""

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
