"""Console accounts: the signed-in user's password (required while it is one-time), and for
super-admins the list of console users with a password reset that issues a one-time password."""

from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for
from flask_login import current_user, login_user
from sqlalchemy import select

from gateway import db
from gateway.admin.blueprint import LoginUser, bp
from gateway.admin.editing import require_superadmin
from gateway.models import Org, User
from gateway.services import tenancy


@bp.route("/password", methods=["GET", "POST"])
def password():
    forced = current_user.must_change_password
    if request.method == "GET":
        return render_template("admin/password.html", error=None, forced=forced, min_length=tenancy.PASSWORD_MIN)
    try:
        with db.write_lock, db.session_scope() as session:
            user = session.get(User, current_user.id)
            tenancy.change_password(session, user, request.form.get("current") or "",
                                    request.form.get("new") or "", request.form.get("repeat") or "",
                                    actor=current_user.email)
    except tenancy.AccountError as e:
        return render_template("admin/password.html", error=f"{str(e)[:1].upper()}{str(e)[1:]}.", forced=forced,
                               min_length=tenancy.PASSWORD_MIN), 400
    # Every other session has ended; this one continues under the new session version.
    login_user(LoginUser(user))
    return redirect(url_for("admin.logs"))


def _users_page(issued: tuple[str, str] | None = None, status: int = 200):
    session = db.request_session()
    users = session.scalars(select(User).order_by(User.email)).all()
    orgs = dict(session.execute(select(Org.id, Org.name)).tuples().all())
    return render_template("admin/users/index.html", users=users, orgs=orgs, issued=issued), status


@bp.get("/users")
def users():
    require_superadmin()
    return _users_page()


@bp.post("/users/<int:user_id>/reset")
def user_reset(user_id: int):
    """A new one-time password, shown once in this response; the user's sessions end."""
    require_superadmin()
    with db.write_lock, db.session_scope() as session:
        user = session.get(User, user_id)
        if user is None:
            abort(404)
        email = user.email
        password = tenancy.reset_password(session, email, actor=current_user.email)
    if user_id == current_user.id:  # one's own reset ends this session too
        return redirect(url_for("admin.login"))
    return _users_page(issued=(email, password))
