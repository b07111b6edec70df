"""CDK app for the SageMaker chatbot: config loading, one Stage per environment, stacks."""

__all__ = [
    "app",
    "base_image",
    "config",
    "front_door_stack",
    "inference_stack",
    "instance_catalog",
    "jsii_loads",
    "stage",
    "stateful_stack",
    "synth_process",
]
