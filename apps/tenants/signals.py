"""Any saved or deleted tenant or key invalidates every process's tenant cache."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from apps.tenants import cache
from apps.tenants.models import ApiKey, Tenant


@receiver([post_save, post_delete], sender=Tenant)
@receiver([post_save, post_delete], sender=ApiKey)
def tenant_changed(**_kwargs) -> None:
    cache.invalidate_everywhere()
