"""User-facing errors: each one prints as a single line and maps to a non-zero exit."""


class AmfError(Exception):
    """An error whose message is meant for the user, printed as one line without a traceback."""

    exit_code = 1

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class InputError(AmfError):
    """The input (stack, inputs.json, manifest) is unusable."""

    exit_code = 2


class ModelDirError(AmfError):
    """A model directory is missing, incomplete or inconsistent."""

    exit_code = 3


class PredictionError(AmfError):
    """The model produced something the organizer would reject (NaN, wrong length, ...)."""

    exit_code = 4
