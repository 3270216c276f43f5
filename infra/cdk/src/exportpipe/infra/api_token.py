"""The Secrets Manager secret holding the vendor Export API token."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from exportpipe.infra.nag import acknowledge

__all__ = ["ApiTokenSecret"]


class ApiTokenSecret(Construct):
    """An empty-until-set secret for the Export API token.

    CloudFormation creates it with a random placeholder; an operator puts the vendor's
    token in with ``aws secretsmanager put-secret-value``. Tasks receive it through the
    task definition's ``secrets`` (read by the execution role at task start), so the
    value never appears in a template, a parameter or the plain environment.

    Attributes:
        secret: the secret.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="Export API bearer token for the exportpipe orchestrator",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=32
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            (
                "The token is issued by the vendor; no rotation Lambda can mint one. It is "
                "rotated by putting the vendor's new token in; tasks read it at start."
            ),
        )
