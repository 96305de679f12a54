"""The schema of examples/extract_receipt.py and of

    mmagent extract --schema examples/receipt_schema.py:Receipt --image examples/media/receipt.png

The field descriptions go into the prompt: a 135M model needs to be told where each value is
(without them SmolLM2 puts the first item line, "Coffee 3.50", in `shop`).
"""

from pydantic import BaseModel, Field


class Receipt(BaseModel):
    shop: str = Field(description="the shop's name, printed on the receipt's first line")
    total: float = Field(description="the amount after TOTAL")
