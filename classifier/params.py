"""``params.yaml``: its schema and its validation.

Every stage loads the whole file through :func:`load_params`, so a typo anywhere (an unknown key, a
wrong type, a value out of range) is reported at once, with its path, before any work starts.
Each stage then reads only its own section, and ``dvc.yaml`` declares exactly that section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML, YAMLError

from classifier.errors import StageError
from classifier.paths import Paths

PARAMS_FILE = Path("params.yaml")


class _Section(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; extra: unknown keys are errors, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


ImageSide = Annotated[int, Field(ge=8, le=1024)]


MNIST_FOLDER = "data/raw"  # the fetch stage's output


class DataParams(_Section):
    source: Literal["mnist", "folder"]
    folder: str = Field(pattern=r"^[^/~]", min_length=1)  # relative to the repository root
    image_size: list[ImageSide] = Field(min_length=2, max_length=2)  # [height, width]
    channels: Literal[1, 3]

    @model_validator(mode="after")
    def _source_fits(self) -> DataParams:
        if ".." in Path(self.folder).parts:
            raise ValueError(f"data.folder {self.folder!r} must be inside the repository")
        if self.source == "mnist":
            if self.image_size != [28, 28] or self.channels != 1:
                raise ValueError(
                    "MNIST images are 28x28 grayscale: set data.image_size [28, 28] and"
                    " data.channels 1"
                )
            if Path(self.folder) != Path(MNIST_FOLDER):
                raise ValueError(
                    f"data.folder must be {MNIST_FOLDER} for data.source mnist (where fetch"
                    " puts the MNIST files); for your own images set data.source: folder"
                )
        elif Path(self.folder) == Path(MNIST_FOLDER):
            raise ValueError(
                f"data.folder {MNIST_FOLDER} is the fetch stage's output; put your images in"
                " another folder, e.g. data/images"
            )
        elif clash := next((o for o in OUTPUT_FOLDERS if _overlaps(self.folder, o)), None):
            raise ValueError(
                f"data.folder {self.folder} overlaps {clash}, which the pipeline writes; put your"
                " images in another folder, e.g. data/images"
            )
        return self


def _output_folders() -> tuple[str, ...]:
    """What the pipeline (and DVC) write: each ``data/`` output itself, the others' top folder."""
    written = [getattr(Paths, name) for name, value in vars(Paths).items() if not callable(value)]
    folders = {
        str(path) if path.parts[0] == "data" else path.parts[0]
        for path in written
        if isinstance(path, Path)
    }
    return tuple(sorted(folders | {".dvc", ".git"}))


OUTPUT_FOLDERS = _output_folders()


def _overlaps(folder: str, output: str) -> bool:
    """Whether ``folder`` is ``output``, inside it, or holds it (DVC refuses such a dependency)."""
    mine, theirs = Path(folder).parts, Path(output).parts
    shorter = min(len(mine), len(theirs))
    return mine[:shorter] == theirs[:shorter]


class PrepareParams(_Section):
    seed: Seed
    validation_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    sample_fraction: float = Field(gt=0, le=1)
    max_class_imbalance: float = Field(ge=1)
    max_train_test_duplicates: int = Field(ge=0)


class BuildParams(_Section):
    seed: Seed
    conv_filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(min_length=1, max_length=3)
    kernel_size: int = Field(ge=1, le=7)
    padding: Literal["same", "valid"]
    batch_norm: bool
    dropout: float = Field(ge=0, lt=1)
    dense_units: int = Field(ge=0, le=4096)
    label_smoothing: float = Field(ge=0, lt=1)
    optimizer: Literal["adam", "sgd", "rmsprop"]
    learning_rate: float = Field(gt=0, le=1)
    mixed_precision: Literal["auto", "on", "off"]


def feature_map_size(params: BuildParams, side: int) -> int:
    """One side of the last conv block's output for an input side of ``side`` pixels: each
    block is a conv (``valid`` takes ``kernel_size - 1`` pixels off) after a 2x2 max-pool (the
    first block has no pool)."""
    for index, _ in enumerate(params.conv_filters):
        if index:
            side //= 2
        if params.padding == "valid":
            side -= params.kernel_size - 1
    return side


class TrainParams(_Section):
    seed: Seed
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    lr_schedule: Literal["constant", "cosine"]
    warmup_fraction: float = Field(ge=0, lt=1)


CHAMPION_FOLDER = "champion"  # a dependency of ``test``: every champion lives under it


class TestParams(_Section):
    __test__ = False  # not a pytest test class
    min_accuracy: float = Field(ge=0, le=1)
    min_class_recall: float = Field(ge=0, le=1)
    champion: int | str  # classifier/champion.py
    max_accuracy_drop: float = Field(ge=0, le=1)
    max_class_recall_drop: float = Field(ge=0, le=1)
    worst_examples: int = Field(ge=1, le=400)

    @model_validator(mode="after")
    def _champion_inside_its_folder(self) -> TestParams:
        if isinstance(self.champion, int) and self.champion < 1:
            raise ValueError(
                f"test.champion {self.champion} is no release: versions start at 1; '' for none"
            )
        if isinstance(self.champion, str) and self.champion:
            parts = Path(self.champion).parts
            if Path(self.champion).is_absolute() or ".." in parts or parts[0] != CHAMPION_FOLDER:
                raise ValueError(
                    f"test.champion {self.champion!r} must be a folder inside {CHAMPION_FOLDER}/"
                    f" (e.g. {CHAMPION_FOLDER}/v1, a copy of dist/<model_name>), a released"
                    " version number, or '' for none"
                )
            if len(parts) < 2:
                raise ValueError(
                    f"test.champion must be a folder inside {CHAMPION_FOLDER}/, not"
                    f" {CHAMPION_FOLDER}/ itself (e.g. {CHAMPION_FOLDER}/v1)"
                )
        return self


class PackageParams(_Section):
    model_name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


class MonitorParams(_Section):
    """The thresholds of ``python -m serving.monitor`` (drift) and ``serving.labels promote`` (a
    canary's evidence), serving-host commands: no stage reads them, and the model card leaves
    them out (changing them re-runs nothing)."""

    alpha: float = Field(gt=0, lt=1)
    min_ks_statistic: float = Field(ge=0, le=1)
    min_class_shift: float = Field(ge=0, le=1)
    min_images: int = Field(ge=1)
    canary_min_predictions: int = Field(ge=1)
    canary_max_error_increase: float = Field(ge=0, le=1)
    canary_max_low_confidence_increase: float = Field(ge=0, le=1)
    canary_max_confidence_drop: float = Field(ge=0, le=1)


class Params(_Section):
    data: DataParams
    prepare: PrepareParams
    build: BuildParams
    train: TrainParams
    test: TestParams
    package: PackageParams
    monitor: MonitorParams

    @model_validator(mode="after")
    def _feature_maps_fit(self) -> Params:
        """Reject, before any stage runs, conv blocks that would shrink the image to nothing."""
        height, width = self.data.image_size
        if min(feature_map_size(self.build, height), feature_map_size(self.build, width)) < 1:
            build = self.build
            raise ValueError(
                f"build: {len(build.conv_filters)} conv blocks of kernel {build.kernel_size}"
                f" with padding {build.padding!r} leave no pixels of a {height}x{width} image"
                " (data.image_size); use fewer blocks, a smaller kernel_size or padding 'same'"
            )
        return self


_RANGE_WORDS = {
    "greater_than_equal": ("≥", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("≤", "le"),
    "less_than": ("<", "lt"),
}


def _describe(error: dict[str, Any]) -> str:
    """One error as ``path: what is wrong, got <value>``."""
    path = ".".join(str(part) for part in error["loc"])
    kind, context, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind in _RANGE_WORDS:
        symbol, key = _RANGE_WORDS[kind]
        bound = context[key]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"{path}: must be {symbol} {bound}, got {value!r}"
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: missing"
    if kind == "value_error":  # a check across keys (a validator): its message says it all
        return f"{path}: {context['error']}" if path else str(context["error"])
    return f"{path}: {error['msg'][0].lower()}{error['msg'][1:]}, got {value!r}"


def parse_params(raw: Any) -> Params:
    """Validate already-parsed YAML; raise StageError listing every problem."""
    if not isinstance(raw, dict):
        raise StageError(f"{PARAMS_FILE} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(e) for e in error.errors(include_url=False))
        raise StageError(f"invalid {PARAMS_FILE}: {problems}") from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate the params file.

    Read as YAML 1.2, as DVC reads and writes it: ``dvc exp run -S build.learning_rate=0.000001``
    writes ``1e-06``, a number in YAML 1.2 but a string to a YAML 1.1 parser such as PyYAML.
    """
    path = Path(path)
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path} not found; run stages from the repository root") from None
    except YAMLError as error:
        raise StageError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    return parse_params(raw)
