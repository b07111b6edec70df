"""Customization pipeline: prepare data, fine-tune or continue pre-training, evaluate."""

from customize.data import (
    DIALOGUE_SUMMARY_TEMPLATE,
    DatasetValidationError,
    Mode,
    ValidationIssue,
    ValidationReport,
    chunk_documents,
    dialogue_pairs_to_prompts,
    split_records,
    validate_jsonl,
)

__all__ = [
    "DIALOGUE_SUMMARY_TEMPLATE",
    "DatasetValidationError",
    "Mode",
    "ValidationIssue",
    "ValidationReport",
    "chunk_documents",
    "dialogue_pairs_to_prompts",
    "split_records",
    "validate_jsonl",
]
