from django.contrib import admin

from .models import DeadLetter


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["task_name", "task_id", "exception", "retries", "created_at"]
    list_filter = ["task_name", "created_at"]
    search_fields = ["task_id", "task_name", "exception"]
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Replay the selected tasks, then delete them")
    def replay(self, request, queryset) -> None:
        from config.celery import app

        for letter in queryset:
            # Store the replay's outcome even for a task that ignores its result:
            # whoever replays it looks for it under Task results.
            app.send_task(
                letter.task_name, args=letter.args, kwargs=letter.kwargs, ignore_result=False
            )
        count = queryset.count()
        queryset.delete()
        self.message_user(request, f"Replayed {count} task(s).")
