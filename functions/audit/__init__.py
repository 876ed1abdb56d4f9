"""The audit Lambda (SAM: CodeUri functions/audit/, Handler app.lambda_handler)."""
