from marshmallow import (
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from flashcart.auth import emails, passwords
from flashcart.auth.service import ROLES
from flashcart.schemas import Name, Text

PASSWORD_MIN, PASSWORD_MAX = passwords.MIN_LENGTH, passwords.MAX_LENGTH
# Far above any token we sign; keeps garbage from being decoded at length.
TOKEN_MAX = 4096


class Credentials(Schema):
    email = fields.Email(
        required=True,
        validate=validate.Length(max=254),
        metadata={
            "description": "Compared after NFKC normalisation and case folding (one account "
            "per address however it is spelled); sign-up refuses an address that mixes "
            "scripts, such as Latin and Cyrillic, within its local part or a domain label."
        },
    )
    password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(min=1, max=PASSWORD_MAX),
    )

    @pre_load
    def normalise_email(self, data, **kwargs):
        # Validated as stored: look-alike spellings are one address (auth/emails.py).
        if isinstance(data, dict) and isinstance(data.get("email"), str):
            data = {**data, "email": emails.normalise(data["email"])}
        return data


class SignupIn(Credentials):
    password = Text(
        required=True,
        load_only=True,
        validate=validate.Length(min=PASSWORD_MIN, max=PASSWORD_MAX),
        metadata={"description": passwords.RULES},
    )
    name = Name(required=True, max_length=100)

    @validates("email")
    def one_script_per_part(self, email, **kwargs):
        if emails.mixes_scripts(email):
            raise ValidationError(emails.MIXED_SCRIPTS)

    @validates_schema
    def strong_password(self, data, **kwargs):
        found = passwords.weaknesses(data["password"], data["email"])
        if found:
            raise ValidationError(found, "password")


class UserOut(Schema):
    id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    role = fields.String(dump_only=True, metadata={"enum": ["user", "admin"]})
    created_at = fields.DateTime(dump_only=True)


class TokenOut(Schema):
    access_token = fields.String(metadata={"description": "Send as `Authorization: Bearer`."})
    refresh_token = fields.String(
        metadata={"description": "For POST /auth/refresh (once) and POST /auth/logout."}
    )
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Seconds until the access token expires."})
    refresh_expires_in = fields.Integer(
        metadata={"description": "Seconds until the refresh token expires."}
    )
    user = fields.Nested(UserOut)


class RefreshTokenIn(Schema):
    refresh_token = Text(
        required=True,
        validate=validate.Length(min=1, max=TOKEN_MAX),
        metadata={"description": "The `refresh_token` of the last login or refresh."},
    )


class RoleIn(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
