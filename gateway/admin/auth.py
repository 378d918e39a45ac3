"""Console sign-in: hashed passwords, CSRF, and a lockout after repeated failures."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, redirect, render_template, request, url_for
from flask_login import login_user, logout_user
from sqlalchemy import select

from gateway import crypto, db
from gateway.admin.blueprint import LoginUser, bp
from gateway.models import User, utcnow
from gateway.services.tenancy import audit


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("admin.logs")


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        settings = current_app.extensions["settings"]
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        with db.write_lock, db.session_scope() as session:
            user = session.scalar(select(User).where(User.email == email))
            now = utcnow()
            if user is not None and user.locked_until and user.locked_until > now:
                error = "Too many failed sign-ins. This account is locked for a while; try again later."
            elif user is None or not crypto.check_password(user.password_hash, password):
                error = "Wrong email or password."
                if user is not None:
                    user.failed_logins += 1
                    if user.failed_logins >= settings.login_max_failures:
                        user.locked_until = now + timedelta(seconds=settings.login_lockout_seconds)
                        user.failed_logins = 0
                        audit(session, email, "login.lockout")
            else:
                user.failed_logins = 0
                user.locked_until = None
                user.last_login_at = now
                login_user(LoginUser(user))
                return redirect(_safe_next(request.args.get("next")))
        return render_template("admin/login.html", error=error, email=email), 401
    return render_template("admin/login.html", error=error, email="")


@bp.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("admin.login"))
