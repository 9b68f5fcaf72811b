"""Kafka-native order orchestration engine."""

__version__ = "0.1.0"
