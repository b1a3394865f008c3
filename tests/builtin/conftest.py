import os

# Candidates run under Triton's interpreter on the CPU: set before anything imports triton.
os.environ["TRITON_INTERPRET"] = "1"
