from marshmallow import Schema, fields, pre_load, validate

PASSWORD_MIN, PASSWORD_MAX = 8, 128


class Credentials(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=1, max=PASSWORD_MAX),
    )

    @pre_load
    def strip_email(self, data, **kwargs):
        if isinstance(data, dict) and isinstance(data.get("email"), str):
            data = {**data, "email": data["email"].strip()}
        return data


class SignupIn(Credentials):
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=PASSWORD_MIN, max=PASSWORD_MAX),
        metadata={"description": f"{PASSWORD_MIN} to {PASSWORD_MAX} characters."},
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))


class UserOut(Schema):
    id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    role = fields.String(dump_only=True, metadata={"enum": ["user", "admin"]})
    created_at = fields.DateTime(dump_only=True)


class TokenOut(Schema):
    access_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Seconds until the token expires."})
    user = fields.Nested(UserOut)
