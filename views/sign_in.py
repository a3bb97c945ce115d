"""Sign in: the only page offered until someone has signed in."""

from ui.auth import sign_in_form

sign_in_form()
