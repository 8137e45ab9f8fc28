"""An example lstm-harness task plugin: ``addition`` ("a+b" -> the digits of the sum)."""

from lstm_harness_addition.task import AdditionParams, AdditionTask

__all__ = ["AdditionParams", "AdditionTask"]
