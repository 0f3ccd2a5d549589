from django.contrib import admin

from .models import Report
from .tasks import render_and_email


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["title", "recipient", "status", "created_at", "rendered_at", "emailed_at"]
    list_filter = ["status"]
    search_fields = ["title", "recipient"]
    actions = ["render_and_email"]

    @admin.action(description="Render and email the selected reports")
    def render_and_email(self, request, queryset) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        render_and_email(ids)
        self.message_user(request, f"Queued {len(ids)} report(s).")
