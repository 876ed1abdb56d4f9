"""The predict Lambda (SAM: CodeUri functions/predict/, Handler app.lambda_handler)."""
