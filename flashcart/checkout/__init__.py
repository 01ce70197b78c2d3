"""Where sales and orders meet: the only package that imports both domain services.

`saga` turns a hold into an order (checkout) and an order back into stock (cancel);
`recovery` finishes what a crash left half-done, closes ended sales and audits Redis
against MongoDB. Sales and orders know nothing of each other (pyproject.toml's
import contract checks it): work that needs both belongs here.
"""
