"""CDK app for the SageMaker chatbot: config loading, one Stage per environment, stacks."""

__all__ = [
    "base_image",
    "config",
    "front_door_stack",
    "inference_stack",
    "instance_catalog",
    "stage",
    "stateful_stack",
]
