"""Console accounts: the signed-in user's password (required while it is one-time). The list of
users, their roles and password resets are the Users page (people.py)."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from flask_login import current_user, login_user

from gateway import db
from gateway.admin.blueprint import LoginUser, bp
from gateway.models import User
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
