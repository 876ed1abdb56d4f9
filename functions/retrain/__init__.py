"""The retrain Lambda (SAM: CodeUri functions/retrain/, Handler app.lambda_handler)."""
