"""The operators' view of the receipts: every tenant's last 24 hours, a table and a plot (inline
SVG drawn here: no plotting library, nothing fetched by the browser)."""

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.usage.models import HourlyReceipt
from apps.usage.receipt import HourReceipt, receipts_last_day

_WIDTH, _BAR = 480, 20  # 24 hours of 20 px
_TOP, _BASE, _HEIGHT = 14, 86, 108  # bars from _BASE up to _TOP; ticks and hours under them


def receipt_svg(hours: list[HourReceipt]) -> SafeString:
    """Per hour, a bar of leads accepted (green) with those refused on top (red), scaled to the
    busiest hour; hours with sampled, deferred, quarantined or dead-lettered work get an amber
    tick under their bar; every sixth hour is named (UTC)."""
    peak = max((hour.accepted + hour.refused for hour in hours), default=0)
    scale = (_BASE - _TOP) / (peak or 1)
    shapes = []
    for index, hour in enumerate(hours):
        x = index * _BAR + 2
        accepted, refused = hour.accepted * scale, hour.refused * scale
        top = _BASE - accepted
        shapes.append(("#2e7d32", x, top, accepted, f"{hour.hour:%H}:00 accepted {hour.accepted}"))
        shapes.append(
            ("#c62828", x, top - refused, refused, f"{hour.hour:%H}:00 refused {hour.refused}")
        )
        shed = hour.sampled + hour.deferred + hour.quarantined + hour.dead_lettered
        if shed:
            title = f"{hour.hour:%H}:00 shed or failed {shed}"
            shapes.append(("#f9a825", x, _BASE + 3, 4, title))
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="16" height="{}" fill="{}"><title>{}</title></rect>',
        (
            (x, f"{y:.1f}", f"{height:.1f}", colour, title)
            for colour, x, y, height, title in shapes
            if height > 0
        ),
    )
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="9" fill="#666">{}</text>',
        (
            (index * _BAR + 2, _HEIGHT - 2, f"{hour.hour:%H}h")
            for index, hour in enumerate(hours)
            if index % 6 == 0 or index == len(hours) - 1
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" '
        'aria-label="leads per hour, last 24 h">'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#999"/>{}{}'
        '<text x="0" y="9" font-size="9" fill="#666">peak {} leads/h</text></svg>',
        _WIDTH,
        _HEIGHT,
        _BASE,
        _WIDTH,
        _BASE,
        bars,
        labels,
        peak,
    )


@admin.register(HourlyReceipt)
class HourlyReceiptAdmin(admin.ModelAdmin):
    """Read-only: the receipts are the control process's (apps/usage/receipt.py)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        days = receipts_last_day()
        context = {
            **self.admin_site.each_context(request),
            "title": "Overload receipts, last 24 hours",
            "opts": self.model._meta,
            "tenants": [(day.tenant, day.totals, receipt_svg(day.hours)) for day in days],
            "first_hour": days[0].hours[0].hour if days else None,
        }
        return TemplateResponse(request, "usage/receipts.html", context)
