"""The tutorial's views (step 4): the chat page, and a notification to one user."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from stomp_cluster import send_to_user


@login_required
def room(request):
    return render(request, "chat/room.html")


@require_POST
@login_required
def notify(request):
    delivery = send_to_user(
        request.POST["to"],
        "/queue/notify",
        {"from": request.user.get_username(), "text": request.POST["text"]},
    )
    return JsonResponse({"sessions": delivery.sessions, "nodes": delivery.nodes})
