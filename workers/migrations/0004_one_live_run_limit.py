"""The live-run limit becomes one setting: the fair share's row holds it, and it takes today's Start cap
(PortalSettings.live_runs_per_member) wherever that row exists; a fair-share limit staff set with no Start cap
recorded is kept; a fair share of 0 (its old default, no limit) with no Start cap recorded becomes the Start cap's
default, the limit members met at Start."""

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import migrations, models

import workers.models


def keep_todays_limit(apps, schema_editor):
    portal = apps.get_model("models_registry", "PortalSettings")
    scheduling = apps.get_model("workers", "SchedulingSettings")
    start_cap = portal.objects.filter(pk=1).values_list("live_runs_per_member", flat=True).first()
    row = scheduling.objects.filter(pk=1).first()
    if start_cap is not None:
        value = start_cap
    elif row is not None and not row.live_runs_per_member:
        value = settings.MTM_LIVE_RUNS_PER_MEMBER
    else:
        return  # a limit staff set on the GPUs page stays; without any row, the first load starts at the default
    scheduling.objects.update_or_create(pk=1, defaults={"live_runs_per_member": value})


def back_to_the_start_cap(apps, schema_editor):
    portal = apps.get_model("models_registry", "PortalSettings")
    scheduling = apps.get_model("workers", "SchedulingSettings")
    value = scheduling.objects.filter(pk=1).values_list("live_runs_per_member", flat=True).first()
    if value is not None:
        portal.objects.filter(pk=1).update(live_runs_per_member=value)


class Migration(migrations.Migration):
    dependencies = [
        ("workers", "0003_worker_cpu_processes"),
        ("models_registry", "0007_verdictrequest"),
    ]

    operations = [
        migrations.RenameField(
            model_name="schedulingsettings", old_name="max_live_runs_per_user", new_name="live_runs_per_member"
        ),
        migrations.AlterField(
            model_name="schedulingsettings",
            name="live_runs_per_member",
            field=models.PositiveIntegerField(
                default=workers.models.default_live_runs_per_member,
                help_text="Runs one member may have queued, resolving, training or validating at once; Start is "
                "refused beyond it (staff included), and a worker takes no more of hers while that many run. 0: no "
                "limit. A new portal starts with MTM_LIVE_RUNS_PER_MEMBER.",
                validators=[MaxValueValidator(10000)],
                verbose_name="Live runs per member",
            ),
        ),
        migrations.RunPython(keep_todays_limit, back_to_the_start_cap),
    ]
