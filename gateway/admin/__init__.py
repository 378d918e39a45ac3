"""HTMX console blueprint: HTML behind flask-login with CSRF, one module per area (the blueprint
and its guards in blueprint.py)."""

from __future__ import annotations

from flask import Flask

from gateway.admin.blueprint import RequestSecureSessionInterface, bp, csrf, login_manager


def init_app(app: Flask) -> None:
    from flask_login import current_user

    from gateway.admin import (  # noqa: F401  (views register on import)  # noqa: F401  (routing console)
        access,
        account,
        agents,
        audit,
        auth,
        batches,  # noqa: F401  (batches: list, drill-down, cancel)
        catalog,
        dlp,  # noqa: F401  (data protection)
        error_reports,  # noqa: F401  (error reports)
        export,  # noqa: F401  (activity export, content logging)
        features,  # noqa: F401  (which savings layers orgs may switch themselves)
        home,  # noqa: F401  (the landing page)
        home_try,  # noqa: F401  (Home's "Try a request")
        logs,
        money,  # noqa: F401  (reconciliation and BYOK keys)
        ollama,  # noqa: F401  (a local Ollama and its models)
        people,  # noqa: F401  (users and apps)
        plans,  # noqa: F401  (plans and which org is on which)
        providers,  # noqa: F401  (providers page)
        routing,
        savings,  # noqa: F401  (savings report and settings)
        spend,  # noqa: F401  (budgets and credits pages, top-up requests)
        tenancy,  # noqa: F401  (orgs, credits and API keys)
        usage,  # noqa: F401  (per-user usage)
    )
    from gateway.admin.nav import groups_for
    from gateway.stores import shared  # the Redis link's state: a banner while it is down

    app.context_processor(lambda: {"nav_groups": lambda: groups_for(current_user), "shared_status": shared.status})
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in the admin blueprint only
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)
    app.session_interface = RequestSecureSessionInterface()
    login_manager.login_view = "admin.login"
    login_manager.init_app(app)
    # flask-login hooks its remember-cookie refresh onto every response; keep it off /v1.
    hook = login_manager._update_remember_cookie
    app.after_request_funcs[None] = [f for f in app.after_request_funcs.get(None, []) if f != hook]
    app.register_blueprint(bp, url_prefix="/admin")
