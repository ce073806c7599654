"""The overload receipt: per tenant and UTC hour, what the intake answered and what became of
the leads it accepted (README "Receipt")."""
