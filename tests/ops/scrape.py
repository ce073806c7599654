"""Reading a Prometheus text exposition, as a scrape would: sum the samples whose labels match."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples carrying these labels (0 when there is none)."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
            for sample_name, sample_labels, _ in self.samples
        )


def scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    return Scrape(response.text)
