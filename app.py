"""CDK app entry point (``cdk.json``'s ``app``): synthesizes the environment of ``-c env=<name>``.

The app itself is :mod:`stacks.app`. This file only sets the process up for one synth before
aws_cdk starts its node runtime, and exits without tearing the interpreter down
(:mod:`stacks.synth_process`).
"""

from __future__ import annotations

from stacks import synth_process

if __name__ == "__main__":
    synth_process.prepare()
    from stacks.app import main

    synth_process.exit_now(main())
