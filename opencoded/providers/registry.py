"""Which providers exist, which are usable, and which model a session runs on.

Input is the config file's `provider` section (contract section 3) and the environment:

    {"anthropic": {"options": {"apiKey": "...", "baseURL": "..."}},
     "openai":    {"options": {"apiKey": "...", "baseURL": "..."}},
     "ollama":    {"type": "openai-compatible", "options": {"baseURL": "http://127.0.0.1:11434/v1"},
                   "models": {"qwen2.5-coder:7b": {}}}}

`anthropic` and `openai` always exist; they are usable ("configured") once they have an API key
(`ANTHROPIC_API_KEY` / `OPENAI_API_KEY`, which beat the file's apiKey, as the contract says the
environment beats the file; `*_BASE_URL` likewise). Any other id is an OpenAI-compatible server
(or `"type": "anthropic"` / `"openai"` for a second endpoint of those protocols), usable once it
has a baseURL; a key is optional. A model entry may carry `name` and `context` (or
`limit.context`).

Model refs are `provider/model` (`anthropic/claude-sonnet-4-5`) or a bare model id whose
provider is guessed from the catalog, the configured models, or its prefix (`claude-`,
`gpt-`, `o3`...). Provider SDK clients are built on first use, so an unused SDK is never
imported.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio

from . import catalog, discovery
from .base import Provider, ProviderError

log = logging.getLogger(__name__)

Kind = Literal["anthropic", "openai", "openai-compatible"]

DISCOVERY_REQUEST_TIMEOUT = 10.0  # seconds
DEFAULT_MODELS: dict[str, str] = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-5.4"}
_BUILTIN: dict[str, tuple[Kind, str, str, str]] = {
    # id: (kind, display name, env prefix, default base URL)
    "anthropic": ("anthropic", "Anthropic", "ANTHROPIC", "https://api.anthropic.com"),
    "openai": ("openai", "OpenAI", "OPENAI", "https://api.openai.com/v1"),
}
_KINDS: tuple[Kind, ...] = ("anthropic", "openai", "openai-compatible")
_PREFIXES = {
    "claude": "anthropic",
    "gpt-": "openai",
    "chatgpt": "openai",
    "o1": "openai",
    "o3": "openai",
    "o4": "openai",
}


class ProviderConfigError(ProviderError):
    """No usable provider or model for a request; the message says what to set."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="INVALID_REQUEST")


@attrs.frozen
class ProviderSpec:
    """One provider as configured, before any client exists."""

    id: str
    kind: Kind
    name: str
    api_key: str | None
    base_url: str | None
    models: dict[str, dict[str, Any]]
    key_hint: str

    @property
    def configured(self) -> bool:
        if self.kind == "openai-compatible":
            return bool(self.base_url)
        return bool(self.api_key)

    @property
    def what_to_set(self) -> str:
        if self.kind == "openai-compatible":
            return f"provider.{self.id}.options.baseURL in the config file"
        return self.key_hint


def _dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProviderConfigError(f"config {where} must be an object")
    return value


def _spec(pid: str, entry: dict[str, Any], env: Mapping[str, str]) -> ProviderSpec:
    options = _dict(entry.get("options"), f"provider.{pid}.options")
    models = _dict(entry.get("models"), f"provider.{pid}.models")
    models = {str(k): _dict(v, f"provider.{pid}.models.{k}") for k, v in models.items()}
    builtin = _BUILTIN.get(pid)
    kind = entry.get("type") or (builtin[0] if builtin else "openai-compatible")
    if kind not in _KINDS:
        raise ProviderConfigError(
            f"config provider.{pid}.type is {kind!r}; expected one of {', '.join(_KINDS)}"
        )
    api_key = options.get("apiKey")
    base_url = options.get("baseURL")
    key_hint = f"provider.{pid}.options.apiKey in the config file"
    if builtin:
        _, _, prefix, default_url = builtin
        api_key = env.get(f"{prefix}_API_KEY") or api_key
        base_url = env.get(f"{prefix}_BASE_URL") or base_url or default_url
        key_hint = f"{prefix}_API_KEY or {key_hint}"
    if kind == "anthropic" and isinstance(base_url, str):
        # The SDK appends /v1/messages itself; `…/v1` (as OpenAI URLs are written) would 404.
        base_url = base_url.rstrip("/").removesuffix("/v1") or base_url
    name = entry.get("name") or (builtin[1] if builtin else pid)
    return ProviderSpec(pid, kind, str(name), api_key, base_url, models, key_hint)


def _count(value: Any) -> int | None:
    """A positive token count from the config, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


class ProviderRegistry:
    """Providers from config and environment; clients built lazily and cached."""

    def __init__(
        self,
        provider_config: Mapping[str, Any] | None,
        env: Mapping[str, str],
        *,
        idle_timeout: float = 90.0,
    ) -> None:
        self.idle_timeout = idle_timeout  # config agent.streamIdleTimeout
        config = dict(provider_config or {})
        self.specs: dict[str, ProviderSpec] = {}
        for pid in [*_BUILTIN, *(k for k in config if k not in _BUILTIN)]:
            entry = _dict(config.get(pid), f"provider.{pid}")
            self.specs[pid] = _spec(pid, entry, env)
        self._providers: dict[str, Provider] = {}
        self._discovered: dict[str, list[str]] = {}

    # ---- listing -------------------------------------------------------------------------

    def model_ids(self, pid: str) -> list[str]:
        spec = self.specs[pid]
        ids: list[str] = []
        if spec.kind in ("anthropic", "openai") and pid in _BUILTIN:
            ids += [m.id for m in catalog.models_for(spec.kind)]
        ids += list(spec.models)
        ids += self._discovered.get(pid, [])
        return list(dict.fromkeys(ids))

    def list_providers(self) -> list[dict[str, Any]]:
        """`GET /providers`: [{id, name, models: [ids], configured}]."""
        return [
            {"id": s.id, "name": s.name, "models": self.model_ids(s.id), "configured": s.configured}
            for s in self.specs.values()
        ]

    def list_models(self) -> list[dict[str, Any]]:
        """`GET /models`: one dict per (provider, model); price null when unknown."""
        out: list[dict[str, Any]] = []
        for spec in self.specs.values():
            for mid in self.model_ids(spec.id):
                out.append(self._model_json(spec, mid))
        return out

    def _model_json(self, spec: ProviderSpec, mid: str) -> dict[str, Any]:
        extra = spec.models.get(mid, {})
        known = catalog.lookup(spec.kind, mid) if spec.kind != "openai-compatible" else None
        limit = extra.get("limit") if isinstance(extra.get("limit"), dict) else {}
        context = extra.get("context") or limit.get("context") or (known.context if known else None)
        price = attrs.asdict(known.price) if known and known.price else None
        return {
            "id": mid,
            "provider": spec.id,
            "name": extra.get("name") or (known.name if known else mid),
            "context": context,
            "price": price,
        }

    def limits(self, pid: str, mid: str) -> tuple[int | None, int | None]:
        """(context window, output limit) in tokens; None where unknown. The config's
        `provider.P.models.M.limit {context, output}` (or `context`) beats the catalog."""
        spec = self.specs.get(pid)
        if spec is None:
            return None, None
        extra = spec.models.get(mid, {})
        limit = extra.get("limit") if isinstance(extra.get("limit"), dict) else {}
        known = catalog.lookup(spec.kind, mid) if spec.kind != "openai-compatible" else None
        context = _count(limit.get("context")) or _count(extra.get("context"))
        output = _count(limit.get("output"))
        return (
            context or (known.context if known else None),
            output or (known.output if known else None),
        )

    async def refresh_models(self) -> None:
        """Ask each usable OpenAI-compatible server which models it has (Ollama & co).

        A server that is down is logged and skipped: listing must not fail for that. Not
        through the SDK (see discovery.py), so no SDK is imported before a turn needs it.
        """
        for spec in self.specs.values():
            if spec.kind != "openai-compatible" or not spec.configured:
                continue
            assert spec.base_url is not None  # configured
            try:
                self._discovered[spec.id] = await discovery.list_model_ids(
                    spec.id,
                    spec.base_url,
                    spec.api_key,
                    timeout=min(DISCOVERY_REQUEST_TIMEOUT, self.idle_timeout),
                    key_hint=spec.key_hint,
                )
            except ProviderError as err:
                log.warning("could not list models of %s: %s", spec.id, err.message)

    # ---- choosing ------------------------------------------------------------------------

    def resolve(
        self,
        model_ref: str | None,
        provider: str | None = None,
        default_model: str | None = None,
    ) -> tuple[str, str]:
        """(provider_id, model_id) for a session.

        The session's own provider/model wins, else the config's default `model`, else the
        first usable provider with its default model. Raises ProviderConfigError naming what
        to set when none is usable.
        """
        if provider or model_ref:
            pid, mid = self._split(model_ref, provider)
        elif default_model:
            pid, mid = self._split(default_model, None)
        else:
            usable = [s.id for s in self.specs.values() if s.configured]
            if not usable:
                raise ProviderConfigError(
                    "no model provider is configured: set ANTHROPIC_API_KEY or OPENAI_API_KEY, "
                    "or add a provider to the config file (provider.anthropic.options.apiKey, "
                    "or an OpenAI-compatible server with provider.<id>.options.baseURL and "
                    "provider.<id>.models)"
                )
            pid, mid = usable[0], None
        spec = self._usable(pid)
        return pid, mid or self._default_model(spec)

    def _split(self, model_ref: str | None, provider: str | None) -> tuple[str, str | None]:
        if provider:
            if provider not in self.specs:
                raise self._unknown(provider)
            if model_ref and model_ref.startswith(f"{provider}/"):
                model_ref = model_ref[len(provider) + 1 :]
            return provider, model_ref or None
        assert model_ref
        head, sep, tail = model_ref.partition("/")
        if sep and head in self.specs:
            return head, tail or None
        return self._guess_provider(model_ref), model_ref

    def _guess_provider(self, mid: str) -> str:
        for spec in self.specs.values():
            if mid in spec.models or mid in self._discovered.get(spec.id, []):
                return spec.id
        known = catalog.lookup(None, mid)
        if known is not None:
            return known.provider
        for prefix, pid in _PREFIXES.items():
            if mid.startswith(prefix):
                return pid
        raise ProviderConfigError(
            f"cannot tell which provider serves model {mid!r}: write it as provider/model "
            f"(providers: {', '.join(self.specs)})"
        )

    def _usable(self, pid: str) -> ProviderSpec:
        spec = self.specs.get(pid)
        if spec is None:
            raise self._unknown(pid)
        if not spec.configured:
            what = "API key" if spec.kind != "openai-compatible" else "base URL"
            raise ProviderConfigError(f"provider {pid!r} has no {what}: set {spec.what_to_set}")
        return spec

    def _default_model(self, spec: ProviderSpec) -> str:
        if spec.id in DEFAULT_MODELS:
            return DEFAULT_MODELS[spec.id]
        models = self.model_ids(spec.id)
        if not models:
            raise ProviderConfigError(
                f"provider {spec.id!r} has no models: name one (model {spec.id}/MODEL) or list "
                f"them under provider.{spec.id}.models in the config file"
            )
        return models[0]

    def _unknown(self, pid: str) -> ProviderConfigError:
        return ProviderConfigError(
            f"unknown provider {pid!r} (known: {', '.join(self.specs)}); add it under "
            f"provider.{pid} in the config file"
        )

    # ---- clients -------------------------------------------------------------------------

    async def load(self, provider_id: str) -> Provider:
        """`get`, with the first import of the provider's SDK (0.7 s of CPU for openai,
        1.5 s for anthropic) in a worker thread: the event loop serves meanwhile."""
        if provider_id not in self._providers:
            kind = self._usable(provider_id).kind
            await trio.to_thread.run_sync(_import_sdk, kind)
        return self.get(provider_id)

    def get(self, provider_id: str) -> Provider:
        """The provider's client, built on first use (this is when its SDK is imported)."""
        if provider_id in self._providers:
            return self._providers[provider_id]
        spec = self._usable(provider_id)
        provider: Provider
        if spec.kind == "anthropic":
            from .anthropic import AnthropicProvider

            provider = AnthropicProvider(
                spec.id,
                api_key=spec.api_key,
                base_url=spec.base_url,
                key_hint=spec.key_hint,
                timeout=self.idle_timeout,
            )
        else:
            from .openai_compat import OpenAICompatProvider

            provider = OpenAICompatProvider(
                spec.id,
                api_key=spec.api_key,
                base_url=spec.base_url,
                official=spec.kind == "openai",
                key_hint=spec.key_hint,
                timeout=self.idle_timeout,
            )
        self._providers[provider_id] = provider
        return provider

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()


def _import_sdk(kind: Kind) -> None:
    importlib.import_module("anthropic" if kind == "anthropic" else "openai")
