"""AWS CDK (Python) app that deploys skymesh: see ``stack.py`` and docs/deploy.md."""
