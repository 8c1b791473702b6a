"""Where every artifact of the pipeline lives, in one place (``dvc.yaml`` names the same paths)."""

from pathlib import Path

RAW_DIR = Path("data/raw")  # fetch: the four extracted MNIST IDX files
PREPARED_DIR = Path("data/prepared")  # prepare: {train,validation,test}/{images,labels}.npy
DATA_REPORT = Path("reports/data_validation.json")  # prepare: findings of validation, checksums
UNTRAINED_MODEL = Path("models/untrained.keras")  # build
MODEL_SUMMARY = Path("models/summary.txt")  # build
TRAINED_MODEL = Path("models/model.keras")  # train
TRAIN_LOG_DIR = Path("metrics/train")  # train: DVCLive metrics.json and per-epoch plots
TRAIN_REPORT = Path("reports/train.json")  # train: where it ran (devices, precision, TF build)
TRAIN_STATE_DIR = Path(".train-state")  # train: resume checkpoint, not an artifact (git-ignored)
TEST_METRICS = Path("metrics/test.json")  # test: the experiments table's numbers and verdict
TEST_REPORT = Path("reports/test.json")  # test: per-class scores and the failed gates
CONFUSION_PLOT = Path("plots/confusion.json")  # test
WORST_PLOT = Path("plots/worst_misclassified.png")  # test
DIST_DIR = Path("dist")  # package: dist/<model_name>/<version>/
