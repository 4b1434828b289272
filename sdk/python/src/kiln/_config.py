"""Everything :func:`kiln.configure` accepts, checked once up front."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._naming import Tags, normalize_server_address, validate_app_name, validate_tags
from ._sampler import MODES
from ._sampling import SAMPLER_ENV, SAMPLERS
from ._version import __version__


@dataclass(frozen=True)
class Config:
    application_name: str
    server_address: str
    auth_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    tenant_id: str | None = None
    http_headers: Mapping[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    tags: Tags = ()
    sample_rate: int = 100
    upload_interval: float = 10.0
    mode: str = "cpu"
    line_numbers: bool = False
    sampler: str = "auto"
    max_queued_uploads: int = 64
    upload_timeout: float = 10.0
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 30.0
    max_upload_attempts: int = 8
    shutdown_timeout: float = 5.0

    @classmethod
    def build(cls, tags: Mapping[str, object] | None = None, **options: object) -> Config:
        """Validates the options; raises ValueError or TypeError naming the bad one."""
        config = cls(tags=validate_tags(tags), **options)  # type: ignore[arg-type]
        config._check()
        return config

    def _check(self) -> None:
        validate_app_name(self.application_name)
        object.__setattr__(self, "server_address", normalize_server_address(self.server_address))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"sampler must be one of {', '.join(SAMPLERS)} (from the argument or"
                f" ${SAMPLER_ENV}), not {self.sampler!r}"
            )
        if not isinstance(self.sample_rate, int) or not 1 <= self.sample_rate <= 1000:
            raise ValueError(
                f"sample_rate must be an integer from 1 to 1000 Hz, not {self.sample_rate!r}"
            )
        positive = {
            "upload_interval": self.upload_interval,
            "upload_timeout": self.upload_timeout,
            "retry_initial_delay": self.retry_initial_delay,
            "retry_max_delay": self.retry_max_delay,
        }
        for name, value in positive.items():
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must be zero or more seconds")
        for name in ("max_queued_uploads", "max_upload_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, not {value!r}")
        if self.auth_token is not None and self.basic_auth is not None:
            raise ValueError("give either auth_token or basic_auth, not both")
        if self.basic_auth is not None and len(self.basic_auth) != 2:
            raise ValueError("basic_auth must be a (user, password) pair")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("give client_cert_file and client_key_file together")
        self.ssl_context()  # a file that does not load fails configure, not every upload

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings of uploads: None (Python's defaults) unless a CA file or a client
        certificate is configured. Raises ValueError when one of the files does not load."""
        if self.ca_file is None and self.client_cert_file is None:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"ca_file {self.ca_file!r} does not load: {error}") from None
        if self.client_cert_file is not None:
            try:
                context.load_cert_chain(self.client_cert_file, self.client_key_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"client_cert_file/client_key_file do not load: {error}"
                ) from None
        return context

    @property
    def profile_type(self) -> str:
        return self.mode

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "User-Agent": f"kiln-python/{__version__}",
        }
        if self.auth_token:
            headers["Authorization"] = f"Bearer {self.auth_token}"
        elif self.basic_auth:
            user, password = self.basic_auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if self.tenant_id:
            headers["X-Scope-OrgID"] = self.tenant_id
        headers.update(self.http_headers)
        return headers
